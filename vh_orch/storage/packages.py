"""Ad-hoc packages uploaded over the HTTP API (`vh exec run --adhoc`): a gzipped tar of the caller's
folder, checked member by member before it is kept, and kept once per content hash.

What its valohai.yaml says is checked a floor up, in vh_orch/config/packages.py."""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vh_orch.errors import UserInputError
from vh_orch.storage.bounded_tar import ArchiveTooLarge, members, open_bounded

DEFAULT_MAX_MEMBERS = 100_000  # `vh-orch serve --max-package-files`
# An archive may unpack to at most this many times its own size (and never past the cap below).
MAX_EXPANSION = 20


class PackageError(UserInputError):
    """The upload is not a package vh-orch can keep; `field` names the form field at fault."""

    def __init__(self, message: str, field: str = "data") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Package:
    identifier: str  # sha256 of the archive's bytes, as the client computes it
    config_yaml: str
    size: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def check_member_name(name: str) -> None:
    pure = PurePosixPath(name)
    if not name or "\0" in name or "\\" in name or pure.is_absolute() or ".." in pure.parts:
        raise PackageError(f"archive member {name!r} would be written outside the package's folder "
                           "(absolute, or with '..'): nothing was stored")


def check_yaml_path(yaml_path: str) -> str:
    yaml_path = yaml_path.strip() or "valohai.yaml"
    try:
        check_member_name(yaml_path)
    except PackageError:
        raise PackageError(f"yaml_path {yaml_path!r} must be a relative path inside the package",
                           field="yaml_path") from None
    return str(PurePosixPath(yaml_path))


def inspect_package(path: Path, yaml_path: str, max_unpacked: int, max_config_bytes: int,
                    max_members: int = DEFAULT_MAX_MEMBERS) -> Package:
    """Every member is a regular file or folder with a name that stays inside the package, the
    whole unpacks to a bounded size (headers included) in at most `max_members` members, no
    header is larger than bounded_tar allows, and the configuration file is UTF-8 text of at most
    `max_config_bytes`; else PackageError."""
    yaml_path = check_yaml_path(yaml_path)
    size = path.stat().st_size
    limit = min(max_unpacked, max(size, 1024 * 1024) * MAX_EXPANSION)
    config: bytes | None = None
    try:
        with open_bounded(path) as tar:
            for member in members(tar, max_members, limit, " (`vh-orch serve --max-package-files`)"):
                check_member_name(member.name)
                if member.issym() or member.islnk():
                    raise PackageError(f"archive member {member.name!r} is a link; packages hold only files "
                                       "and folders: nothing was stored")
                if not (member.isfile() or member.isdir()):
                    raise PackageError(f"archive member {member.name!r} is a device, pipe or other special "
                                       "file; packages hold only files and folders: nothing was stored")
                if member.isfile() and str(PurePosixPath(member.name)) == yaml_path:
                    if member.size > max_config_bytes:
                        raise PackageError(f"{yaml_path} is larger than {max_config_bytes} bytes", field="yaml_path")
                    handle = tar.extractfile(member)
                    config = handle.read() if handle else b""
    except ArchiveTooLarge as exc:
        raise PackageError(str(exc)) from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise PackageError(f"the upload is not a readable tar archive (gzip, bzip2, xz or plain): {exc}") from None
    if config is None:
        raise PackageError(f"the package has no {yaml_path}", field="yaml_path")
    try:
        text = config.decode("utf-8")
    except UnicodeDecodeError:
        raise PackageError(f"{yaml_path} is not UTF-8 text", field="yaml_path") from None
    return Package(identifier=sha256_of(path), config_yaml=text, size=size)


def keep_package(upload: Path, package: Package, store_dir: Path) -> Path:
    """Move a checked upload to its place (once per content hash); returns where it is."""
    store_dir.mkdir(parents=True, exist_ok=True)
    dest = store_dir / f"{package.identifier}.tgz"
    if dest.exists():
        upload.unlink(missing_ok=True)
    else:
        os.chmod(upload, 0o600)  # the daemon user's alone (it may have been made under another umask)
        os.replace(upload, dest)
    return dest
