"""Datastores keep outputs; each is addressed by a URI (file://, s3://, gs://).

The interface every datastore has, the local one (files under a folder), and what the object
stores (s3.py, gcs.py) share; datastores.py picks one from an environment's setting or a URI.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from vh_orch.errors import ConfigError
from vh_orch.storage.transfer import UploadPlan

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

    def get(self, uri: str, dest: Path) -> tuple[int, str]:
        """Copy a stored object to a local file; returns its size and sha256."""
        ...


class SignedTransfers(Protocol):
    """What an object store (S3Datastore, GCSDatastore) adds: a remote machine moves the
    bytes itself through signed URLs (transfer.py's scripts), the daemon only signs."""

    scheme: str  # "s3", "gs": presigned_get signs URIs of this scheme only

    def presigned_get(self, uri: str, expires_s: int = 3600) -> str:
        """A URL anyone holding it can GET the object with, for expires_s seconds."""
        ...

    def plan_upload(self, name: str, size: int, expires_s: int = 3600) -> UploadPlan:
        """Reserve a datum id for a file of `size` bytes and sign the URL(s) a machine uploads it with."""
        ...

    def complete_upload(self, plan: UploadPlan, etags: dict[int, str]) -> None:
        """Finish a planned upload (etags: part number → ETag) and check the stored size."""
        ...

    def abort_upload(self, plan: UploadPlan) -> None:
        """Give up a planned upload and remove whatever part of it was stored."""
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
        os.chmod(dest, 0o600)  # stored outputs are the daemon user's alone, whatever mode the command gave them
        return StoredFile(datum_id=datum_id, uri=dest.resolve().as_uri(), size=size, sha256=digest)

    def get(self, uri: str, dest: Path) -> tuple[int, str]:
        return copy_with_sha256(file_uri_path(uri), dest)


def split_object_uri(uri: str, scheme: str, kind: str) -> tuple[str, str]:
    """(bucket, key) of an object URI SCHEME://bucket/key (the key taken as it is, not percent-decoded);
    kind names the store in the error ("an S3")."""
    prefix = f"{scheme}://"
    bucket, _, key = uri[len(prefix):].partition("/") if uri.startswith(prefix) else ("", "", "")
    if not bucket or not key:
        raise ConfigError(f"{uri!r} is not {kind} object URI: use {prefix}bucket/key")
    return bucket, key


def check_endpoint_url(endpoint_url: object) -> None:
    if endpoint_url is not None and (not isinstance(endpoint_url, str)
                                     or not endpoint_url.startswith(("http://", "https://"))):
        raise ConfigError(f"datastore endpoint_url {endpoint_url!r} must be an http:// or https:// URL")


def is_ip_address(name: str) -> bool:
    """Bucket names may not look like an IP address (S3 and GCS agree)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def file_uri_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"not a local file URI: {uri!r}")
    return Path(unquote(parsed.path))


def copy_with_sha256(source: Path, dest: Path) -> tuple[int, str]:
    """Copy a file, returning its size and sha256 (computed on the bytes copied)."""
    digest = hashlib.sha256()
    size = 0
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not stay fuller by a partial copy
        raise
    os.replace(tmp, dest)
    return size, digest.hexdigest()
