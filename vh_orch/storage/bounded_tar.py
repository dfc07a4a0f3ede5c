"""Reading an untrusted tar archive member by member, in bounded memory and time.

Python's tarfile reads a pax extended header or a GNU long name/link header into memory
whole, however large it says it is (a 400 MiB pax header packs into 400 KB of gzip), keeps
every member it has read in a list, and reads GNU sparse maps of any length. Here:

- an extension header (pax, GNU long name or long link) larger than MAX_HEADER_BYTES is
  refused before it is read, and so is a run of more than MAX_HEADER_RUN of them in a row
  (each would be read before the member they describe) or more than MAX_GLOBAL_HEADERS
  global pax headers (their keys accumulate over the whole archive);
- sparse members are refused before their maps are read (a package holds plain files);
- members are not kept once read, at most `max_members` are read, and the bytes read so
  far (headers, padding and contents, as the archive's offset counts them) are checked
  against `max_bytes` before the reader moves past a member's contents.

The bounds hook into TarInfo's header processing (`_proc_member` and the sparse readers),
the one place every header passes through; tests/test_security_bombs.py holds one archive
for each bomb, so a Python whose tarfile changed shape fails there rather than quietly.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Any

from vh_orch.errors import UserInputError

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_RUN = 8
MAX_GLOBAL_HEADERS = 8
_EXTENSIONS = {tarfile.XHDTYPE: "pax extended header", tarfile.SOLARIS_XHDTYPE: "pax extended header",
               tarfile.XGLTYPE: "global pax header", tarfile.GNUTYPE_LONGNAME: "GNU long-name header",
               tarfile.GNUTYPE_LONGLINK: "GNU long-link header"}


class ArchiveTooLarge(UserInputError):
    """The archive passes one of the bounds; the message names it."""


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo whose header processing refuses what would be read into memory unbounded."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        kind = _EXTENSIONS.get(self.type)
        if kind is None:
            tarfile_._vh_run = 0  # type: ignore[attr-defined]
            if self.type == tarfile.GNUTYPE_SPARSE:
                _refuse_sparse()
            return super()._proc_member(tarfile_)  # type: ignore[misc]
        if self.size > MAX_HEADER_BYTES:
            raise ArchiveTooLarge(f"the archive has a {kind} of {self.size:,} bytes; the limit is "
                                  f"{MAX_HEADER_BYTES // 1024} KiB each: nothing was stored")
        run = tarfile_._vh_run = getattr(tarfile_, "_vh_run", 0) + 1  # type: ignore[attr-defined]
        if run > MAX_HEADER_RUN:
            raise ArchiveTooLarge(f"the archive has more than {MAX_HEADER_RUN} extension headers in a row; "
                                  "nothing was stored")
        if self.type == tarfile.XGLTYPE:
            seen = tarfile_._vh_globals = getattr(tarfile_, "_vh_globals", 0) + 1  # type: ignore[attr-defined]
            if seen > MAX_GLOBAL_HEADERS:
                raise ArchiveTooLarge(f"the archive has more than {MAX_GLOBAL_HEADERS} global pax headers; "
                                      "nothing was stored")
        return super()._proc_member(tarfile_)  # type: ignore[misc]

    # A pax header naming a sparse map: refused before the map (of any length) is read.
    def _proc_gnusparse_00(self, *_args: Any) -> Any:
        _refuse_sparse()

    def _proc_gnusparse_01(self, *_args: Any) -> Any:
        _refuse_sparse()

    def _proc_gnusparse_10(self, *_args: Any) -> Any:
        _refuse_sparse()


def _refuse_sparse() -> None:
    raise ArchiveTooLarge("the archive has a sparse member; packages hold plain files and folders: "
                          "nothing was stored")


def open_bounded(path: Any) -> tarfile.TarFile:
    """A tar archive, gzip, bzip2, xz or plain, whose headers are read with the bounds above."""
    return tarfile.open(path, mode="r:*", tarinfo=BoundedTarInfo)


def members(tar: tarfile.TarFile, max_members: int, max_bytes: int, members_setting: str = "") -> Iterator[
        tarfile.TarInfo]:
    """The archive's members in order, none kept after it is passed on; ArchiveTooLarge past
    `max_members` members or `max_bytes` bytes unpacked (headers included)."""
    count = 0
    while True:
        member = tar.next()
        tar.members.clear()
        if member is None:
            return
        count += 1
        if count > max_members:
            raise ArchiveTooLarge(f"the archive has more than {max_members:,} members (files and folders)"
                                  f"{members_setting}: nothing was stored")
        if tar.offset > max_bytes:  # before the reader moves past this member's contents
            raise ArchiveTooLarge(f"the archive unpacks to more than {max_bytes:,} bytes (its headers count): "
                                  "nothing was stored")
        yield member
