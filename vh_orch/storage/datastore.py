"""Datastores keep outputs; each is addressed by a URI (file:// now, s3:// and gs:// later)."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from vh_orch.errors import ConfigError

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    datum_id: str
    uri: str
    size: int
    sha256: str


class Datastore(Protocol):
    def put(self, source: Path, name: str) -> StoredFile:
        """Store a local file under a new datum id; returns where it went and its checksum."""
        ...

    def get(self, uri: str, dest: Path) -> None:
        """Copy a stored object to a local file."""
        ...


class FileDatastore:
    """Objects as files under a root folder: <root>/<id[:2]>/<id>/<name>."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, source: Path, name: str) -> StoredFile:
        datum_id = uuid.uuid4().hex
        dest = self.root / datum_id[:2] / datum_id / Path(name).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        size, digest = copy_with_sha256(source, dest)
        return StoredFile(datum_id=datum_id, uri=dest.resolve().as_uri(), size=size, sha256=digest)

    def get(self, uri: str, dest: Path) -> None:
        copy_with_sha256(file_uri_path(uri), dest)


def file_uri_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"not a local file URI: {uri!r}")
    return Path(unquote(parsed.path))


def download_uri(uri: str, dest: Path) -> None:
    """Copy a stored object, whatever datastore holds it, to a local file."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        copy_with_sha256(file_uri_path(uri), dest)
        return
    raise ConfigError(f"unsupported datastore URI {uri!r}")


def copy_with_sha256(source: Path, dest: Path) -> tuple[int, str]:
    """Copy a file, returning its size and sha256 (computed on the bytes copied)."""
    digest = hashlib.sha256()
    size = 0
    tmp = dest.with_name(f".{dest.name}.part")
    with open(source, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    os.replace(tmp, dest)
    shutil.copymode(source, dest)
    return size, digest.hexdigest()
