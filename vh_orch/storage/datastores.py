"""Which datastore: an environment's `datastore` setting, checked when the environment is added
(validate_datastore_setting) and made into a Datastore (datastore_from_settings), and the datastore
that holds a stored object's URI (bucket_datastore, download_uri).

This is the one module that knows every kind; the object stores' SDKs load only when one is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vh_orch.errors import ConfigError
from vh_orch.storage.datastore import Datastore, FileDatastore, copy_with_sha256, file_uri_path

ACCEPTED_SETTINGS = (
    "accepted: no setting (files under the data folder), 'file:///absolute/folder', 's3://bucket[/prefix]', "
    "'gs://bucket[/prefix]', a mapping {uri: 's3://bucket[/prefix]', endpoint_url: URL, region: NAME, "
    "multipart_threshold_mb: N (files above N MiB go in parts of N MiB, at least 5; default 64)}, "
    "or a mapping {uri: 'gs://bucket[/prefix]', project: ID, endpoint_url: URL, "
    "credentials: 'anonymous' (only with endpoint_url, for an emulator)}"
)
S3_KEYS = {"uri", "endpoint_url", "region", "multipart_threshold_mb"}
GS_KEYS = {"uri", "endpoint_url", "project", "credentials"}


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
