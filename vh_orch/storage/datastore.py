"""Datastores keep outputs; each is addressed by a URI (file://, s3://, gs://).

An environment picks its datastore with an optional `datastore` setting, checked by
validate_datastore_setting when the environment is added and turned into a Datastore
by datastore_from_settings.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from vh_orch.errors import ConfigError
from vh_orch.storage.transfer import UploadPlan

CHUNK = 1024 * 1024
ACCEPTED_SETTINGS = (
    "accepted: no setting (files under the data folder), 'file:///absolute/folder', 's3://bucket[/prefix]', "
    "'gs://bucket[/prefix]', a mapping {uri: 's3://bucket[/prefix]', endpoint_url: URL, region: NAME, "
    "multipart_threshold_mb: N (files above N MiB go in parts of N MiB, at least 5; default 64)}, "
    "or a mapping {uri: 'gs://bucket[/prefix]', project: ID, endpoint_url: URL, "
    "credentials: 'anonymous' (only with endpoint_url, for an emulator)}"
)
S3_KEYS = {"uri", "endpoint_url", "region", "multipart_threshold_mb"}
GS_KEYS = {"uri", "endpoint_url", "project", "credentials"}


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


def datastore_from_settings(value: object, data_dir: Path) -> Datastore:
    """The datastore an environment's `datastore` setting names (None: files under data_dir)."""
    resolved = _resolve_setting(value)
    if not isinstance(resolved, dict):
        return FileDatastore(resolved or data_dir)
    if resolved["uri"].startswith("gs://"):
        from vh_orch.storage.gcs import GCSDatastore

        return GCSDatastore(**resolved)
    from vh_orch.storage.s3 import S3Datastore

    return S3Datastore(**resolved)


def validate_datastore_setting(value: object) -> None:
    """Check a `datastore` setting without contacting anything; ConfigError saying what is accepted."""
    resolved = _resolve_setting(value)
    if isinstance(resolved, dict) and resolved["uri"].startswith("gs://"):
        from vh_orch.storage.gcs import check_gcs_settings

        check_gcs_settings(**resolved)
    elif isinstance(resolved, dict):
        from vh_orch.storage.s3 import check_s3_settings

        check_s3_settings(**resolved)


def _resolve_setting(value: object) -> Path | dict[str, Any] | None:
    """None (the data folder), a folder, or S3Datastore's or GCSDatastore's keyword arguments."""
    if value is None:
        return None
    setting = {"uri": value} if isinstance(value, str) else value
    if not isinstance(setting, Mapping) or not isinstance(setting.get("uri"), str):
        raise ConfigError(f"datastore setting {value!r} is not understood; {ACCEPTED_SETTINGS}")
    uri = setting["uri"].strip()
    scheme = urlparse(uri).scheme
    if scheme == "file":
        if set(setting) != {"uri"}:
            raise ConfigError(f"a file:// datastore takes no other settings; {ACCEPTED_SETTINGS}")
        path = file_uri_path(uri)
        if not path.is_absolute():
            raise ConfigError(f"datastore {uri!r} is not an absolute folder; {ACCEPTED_SETTINGS}")
        return path
    if scheme == "gs":
        unknown = sorted(set(setting) - GS_KEYS, key=str)
        if unknown:
            raise ConfigError(f"datastore setting has unknown keys {unknown}; {ACCEPTED_SETTINGS}")
        return {"uri": uri, **{key: setting.get(key) for key in ("project", "endpoint_url", "credentials")}}
    if scheme != "s3":
        raise ConfigError(f"datastore {uri!r} is not a file://, s3:// or gs:// URI; {ACCEPTED_SETTINGS}")
    unknown = sorted(set(setting) - S3_KEYS, key=str)
    if unknown:
        raise ConfigError(f"datastore setting has unknown keys {unknown}; {ACCEPTED_SETTINGS}")
    options: dict[str, Any] = {"uri": uri, "endpoint_url": setting.get("endpoint_url"), "region": setting.get("region")}
    if "multipart_threshold_mb" in setting:
        mb = setting["multipart_threshold_mb"]
        if not isinstance(mb, int) or isinstance(mb, bool) or not 0 <= mb <= 5120:
            raise ConfigError(f"datastore multipart_threshold_mb {mb!r} must be a whole number of MiB (0-5120)")
        options["multipart_threshold"] = mb * 1024 * 1024
        options["part_size"] = max(mb, 5) * 1024 * 1024  # bigger files go in parts of that size
    return options


def download_uri(uri: str, dest: Path, datastore_settings: object = None) -> tuple[int, str]:
    """Copy a stored object, whatever datastore holds it, to a local file; returns its size and sha256.

    s3:// and gs:// objects are fetched with the endpoint and region (S3) or endpoint, project
    and credentials (GCS) of datastore_settings when it names a datastore of the same kind,
    else with the SDK's defaults (boto3 honours AWS_ENDPOINT_URL_S3; GCS uses Application
    Default Credentials).
    """
    if urlparse(uri).scheme == "file":
        return copy_with_sha256(file_uri_path(uri), dest)
    return bucket_datastore(uri, datastore_settings).get(uri, dest)  # type: ignore[attr-defined]


def bucket_datastore(uri: str, datastore_settings: object = None) -> Datastore:
    """The S3 or GCS datastore of an s3:// or gs:// object's bucket, with the endpoint and credentials
    of datastore_settings when it names a datastore of the same kind (see download_uri)."""
    scheme = urlparse(uri).scheme
    if scheme not in ("s3", "gs"):
        raise ConfigError(f"unsupported datastore URI {uri!r}")
    resolved = _resolve_setting(datastore_settings)
    own = resolved if isinstance(resolved, dict) and urlparse(resolved["uri"]).scheme == scheme else {}
    if scheme == "gs":
        from vh_orch.storage.gcs import GCSDatastore, split_gs_uri

        bucket, _ = split_gs_uri(uri)
        where = {k: own[k] for k in ("endpoint_url", "project", "credentials") if k in own}
        return GCSDatastore(f"gs://{bucket}", **where)
    from vh_orch.storage.s3 import S3Datastore, split_s3_uri

    bucket, _ = split_s3_uri(uri)
    where = {k: own[k] for k in ("endpoint_url", "region") if k in own}
    return S3Datastore(f"s3://{bucket}", **where)


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
