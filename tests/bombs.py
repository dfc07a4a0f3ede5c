"""Hostile inputs, small enough to be harmless when refused: the tests (test_security_bombs.py,
test_bounded_parsing.py) and bench/security.py build them here. No fixtures, no network guard: a
plain module that the benchmarks import too."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Callable

MiB = 1 << 20

# 261 bytes that expand to 9**6 (531,441) values when walked
ALIAS_BOMB = b"""\
- step:
    name: x
    image: y
    a: &a [x,x,x,x,x,x,x,x,x]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    command: [*e,*e,*e,*e,*e,*e,*e,*e,*e]
"""


def package(files: dict[str, bytes], hostile: Callable[[tarfile.TarFile], None] | None = None) -> bytes:
    """A gzipped tar like the one `vh exec run --adhoc` uploads, with hostile members added."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if hostile is not None:
            hostile(tar)
    return gzip.compress(raw.getvalue(), mtime=0)


def header_bomb(kind: bytes, size: int, then: dict[str, bytes] | None = None) -> bytes:
    """A gzipped tar whose first header says `size` bytes of `kind` (a pax header, a GNU long name)
    follow (they do: zeros), then the members `then`: 200 MiB packs to about 200 KB."""
    info = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    info.type, info.size = kind, size
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    out = [packer.compress(info.tobuf(tarfile.USTAR_FORMAT))]
    padded = size + (-size % 512)
    zeros = bytes(MiB)
    for start in range(0, padded, MiB):
        out.append(packer.compress(zeros[:min(MiB, padded - start)]))
    tail = io.BytesIO()
    with tarfile.open(fileobj=tail, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (then or {}).items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return b"".join([*out, packer.compress(tail.getvalue()), packer.flush()])


def members(count: int) -> bytes:
    """A gzipped tar of `count` empty members (one header each) and nothing else."""
    block = tarfile.TarInfo("empty").tobuf(tarfile.USTAR_FORMAT)
    return gzip.compress(block * count + bytes(1024), mtime=0)
