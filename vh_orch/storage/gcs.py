"""The GCS datastore: objects at gs://<bucket>/<prefix>/<datum id>/<file name>.

It mirrors s3.py, so the runner uses either without knowing which. Two ways bytes move:
- through this process (`put`, `get`): the sha256 is computed on the very bytes sent
  or received. Files above the chunk size go up as one resumable upload fed chunk by
  chunk: each chunk is read once, hashed, then handed to the upload.
- directly between a remote machine and GCS (`plan_upload`, `presigned_get`): V4 signed
  URLs, moved with transfer.py's scripts. Every plan is one signed PUT (no parts, no
  upload id): GCS takes a single PUT of up to 5 TiB, so S3's multipart (needed there
  because S3 caps a PUT at 5 GiB) has no reason to exist here, and GCS's own signed
  resumable upload (a signed POST with `x-goog-resumable: start`, then PUTs to the
  session URI it answers) would need a stateful client on the machine.

Credentials come only from Application Default Credentials (google.auth.default());
vh-orch stores none. `credentials="anonymous"` is for a local emulator and needs
`endpoint_url`. A signed URL needs a signer: service-account key files and impersonated
credentials sign by themselves; a VM's metadata-server credentials sign through the IAM
signBlob API (the service account needs roles/iam.serviceAccountTokenCreator on itself);
user credentials cannot sign. `signing_credentials` overrides the signer.

Failures map onto the CloudError family as in s3.py: missing bucket, credentials or
permissions → ConfigError, 429, 5xx, connection trouble and a checksum mismatch →
TransientCloudError, anything else → CloudError, with GCS's own status and message.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from vh_orch.errors import CloudError, ConfigError, TransientCloudError
from vh_orch.storage.datastore import CHUNK, StoredFile, check_endpoint_url, is_ip_address, split_object_uri
from vh_orch.storage.transfer import MiB, UploadPlan

try:  # google-cloud-storage 3 has its own copies; 2.x raises google-resumable-media's
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
except ImportError:  # pragma: no cover
    from google.resumable_media import DataCorruption, InvalidResponse  # type: ignore[no-redef]

MAX_OBJECT = 5 * 1024 * 1024 * MiB  # GCS's limit for an object, and so for one PUT
MAX_NAME_BYTES = 1024  # of an object name, UTF-8 encoded
MAX_EXPIRES_S = 7 * 24 * 3600  # V4 signed URLs live at most a week
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
GCS_HOST = "https://storage.googleapis.com"
BUCKET_RULE = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")
PROJECT_RULE = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
ACCEPTED_URIS = ("use gs://bucket or gs://bucket/prefix (bucket: 3-63 of a-z, 0-9, '-', '_', '.', starting and "
                 "ending with a letter or digit, no 'google'; up to 222 with dots, 63 between dots)")
ADC_HELP = ("vh-orch uses Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service "
            "account key file, run `gcloud auth application-default login --impersonate-service-account=SA`, "
            "or run vh-orch on a VM with a service account")


def parse_gs_root(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of a datastore URI gs://bucket[/prefix]; ConfigError saying how to fix a bad one."""
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        raise ConfigError(f"datastore URI {uri!r} is not a gs:// URI; {ACCEPTED_URIS}")
    bucket, _, prefix = uri[len("gs://"):].partition("/")
    if not bucket:
        raise ConfigError(f"datastore URI {uri!r} names no bucket; {ACCEPTED_URIS}")
    if not _valid_bucket(bucket):
        raise ConfigError(f"datastore URI {uri!r}: {bucket!r} is not a valid GCS bucket name; {ACCEPTED_URIS}")
    if any(c in prefix for c in "?#\r\n\0"):
        raise ConfigError(f"datastore URI {uri!r}: the prefix may not contain '?', '#', line breaks or NUL; "
                          f"{ACCEPTED_URIS}")
    prefix = "/".join(segment for segment in prefix.split("/") if segment)
    if len(prefix.encode()) > 512:
        raise ConfigError(f"datastore URI {uri!r}: the prefix is longer than 512 bytes; GCS names end at 1024")
    return bucket, prefix


def split_gs_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an object URI gs://bucket/key."""
    return split_object_uri(uri, "gs", "a GCS")


def check_gcs_settings(uri: str, project: str | None = None, endpoint_url: str | None = None,
                       credentials: str | None = None) -> tuple[str, str]:
    """Validate GCSDatastore's settings without contacting anything; returns (bucket, prefix)."""
    bucket, prefix = parse_gs_root(uri)
    check_endpoint_url(endpoint_url)
    if project is not None and (not isinstance(project, str) or not PROJECT_RULE.fullmatch(project)):
        raise ConfigError(f"datastore project {project!r} is not a project ID like my-project-123 "
                          "(6-30 of a-z 0-9 -, starting with a letter)")
    if credentials not in (None, "anonymous"):
        raise ConfigError(f"datastore credentials {credentials!r} are not accepted: leave them out to use "
                          "Application Default Credentials, or give 'anonymous' with a local emulator's "
                          "endpoint_url; vh-orch stores no keys")
    if credentials == "anonymous" and endpoint_url is None:
        raise ConfigError("datastore credentials 'anonymous' only work with an emulator: give its endpoint_url, "
                          "or leave credentials out to use Application Default Credentials")
    return bucket, prefix


class GCSDatastore:
    """Objects in a GCS bucket, under an optional prefix.

    Give `endpoint_url` for an emulator (signed URLs then point there as well);
    `signing_credentials` (google.auth Signing credentials) sign URLs instead of the
    ADC ones, which tests with anonymous credentials need. Files above `chunk_size`
    (a multiple of 256 KiB) go up in a resumable upload of chunks of that size.
    """

    scheme = "gs"  # the URIs this store signs for (see SignedTransfers)

    def __init__(self, uri: str, project: str | None = None, endpoint_url: str | None = None,
                 credentials: str | None = None, *, signing_credentials: Any = None, chunk_size: int = 64 * MiB,
                 retry_deadline_s: float = 120.0) -> None:
        self.bucket, self.prefix = check_gcs_settings(uri, project, endpoint_url, credentials)
        if chunk_size <= 0 or chunk_size % (256 * 1024):
            raise ConfigError(f"datastore chunk size {chunk_size} must be a positive multiple of 256 KiB")
        self.project = project
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.credentials = credentials
        self.chunk_size = chunk_size
        self._signing_credentials = signing_credentials
        # Uploads are retried too: every key holds a fresh datum id, so a repeated write
        # can only replace our own bytes (the library retries them only with a precondition).
        self._retry: Retry = DEFAULT_RETRY.with_timeout(retry_deadline_s)
        self._lock = threading.Lock()
        self._client: storage.Client | None = None
        self._creds: google.auth.credentials.Credentials | None = None

    # Through this process

    def put(self, source: Path, name: str) -> StoredFile:
        """Store a local file under a new datum id; returns its URI and the sha256 of the bytes sent."""
        datum_id = uuid.uuid4().hex
        key = self._key(datum_id, name)
        digest = hashlib.sha256()
        with open(source, "rb") as fh, self._errors(f"storing {source} as gs://{self.bucket}/{key}", in_ours=True):
            blob = self._bucket().blob(key)
            size = os.fstat(fh.fileno()).st_size
            if size <= self.chunk_size:
                body = fh.read()
                digest.update(body)
                blob.upload_from_string(body, content_type="application/octet-stream", retry=self._retry)
                size = len(body)
            else:
                size = self._put_resumable(blob, fh, digest)
        return StoredFile(datum_id=datum_id, uri=f"gs://{self.bucket}/{key}", size=size, sha256=digest.hexdigest())

    def _put_resumable(self, blob: storage.Blob, fh: BinaryIO, digest: hashlib._Hash) -> int:
        size = 0
        # The writer keeps each chunk until GCS has it, so a retried chunk is the same bytes.
        # Leaving the block with an exception cancels the upload session: nothing is stored.
        with blob.open("wb", chunk_size=self.chunk_size, content_type="application/octet-stream",
                       retry=self._retry) as writer:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
        return size

    def get(self, uri: str, dest: Path) -> tuple[int, str]:
        """Download an object (from any bucket) to dest atomically; returns its size and sha256."""
        bucket, key = split_gs_uri(uri)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._errors(f"fetching {uri}"), open(tmp, "wb") as fh:
                sink = _HashingSink(fh)
                # The library checks GCS's crc32c or md5 of the whole object, and a retry
                # resumes where the bytes stopped, pinned to the first answer's generation.
                self._gcs().bucket(bucket).blob(key).download_to_file(sink, retry=self._retry)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return sink.size, sink.digest.hexdigest()

    def stat(self, uri: str) -> tuple[int, str]:
        """(size, version) of an object: its generation, which changes whenever its content does."""
        bucket, key = split_gs_uri(uri)
        with self._errors(f"looking at {uri}"):
            blob = self._gcs().bucket(bucket).get_blob(key, retry=self._retry)
        if blob is None:
            raise CloudError(f"looking at {uri}: no such object")
        return int(blob.size or 0), f"{blob.generation} {blob.md5_hash or ''}"

    # Directly between a remote machine and GCS

    def presigned_get(self, uri: str, expires_s: int = 3600) -> str:
        """A V4 signed URL anyone holding it can GET the object with, for expires_s seconds."""
        bucket, key = split_gs_uri(uri)
        with self._errors(f"signing a download of {uri}"):
            return self._sign(self._gcs().bucket(bucket).blob(key), "GET", expires_s)

    def plan_upload(self, name: str, size: int, expires_s: int = 3600) -> UploadPlan:
        """Reserve a datum id for a file of `size` bytes and sign the one PUT a machine uploads it with.

        GCS takes up to 5 TiB in a single PUT, so a plan never has parts (see the module's notes);
        finish it with complete_upload, or abort_upload.
        """
        if size > MAX_OBJECT:
            raise CloudError(f"{name!r} is {size} bytes; a GCS object holds at most 5 TiB")
        datum_id = uuid.uuid4().hex
        key = self._key(datum_id, name)
        uri = f"gs://{self.bucket}/{key}"
        with self._errors(f"planning the upload of {uri}"):
            url = self._sign(self._bucket().blob(key), "PUT", expires_s)
        return UploadPlan(datum_id, uri, key, size, url=url)

    def complete_upload(self, plan: UploadPlan, etags: dict[int, str]) -> None:
        """Check that a planned upload arrived whole (etags are for multipart stores; GCS plans have no parts)."""
        if plan.parts or plan.upload_id is not None:
            raise ValueError(f"{plan.uri}: a plan with parts is not a GCS plan")
        with self._errors(f"completing the upload of {plan.uri}"):
            blob = self._bucket().get_blob(plan.key, retry=self._retry)
        if blob is None:
            raise CloudError(f"upload of {plan.uri}: GCS holds no such object; the upload did not arrive")
        if blob.size != plan.size:
            raise CloudError(f"upload of {plan.uri}: GCS holds {blob.size} bytes, {plan.size} were planned "
                             "(did the file change while it was uploaded?)")

    def abort_upload(self, plan: UploadPlan) -> None:
        """Give up a planned upload: delete what the PUT may have written."""
        with self._errors(f"deleting {plan.uri}"):
            try:
                self._bucket().blob(plan.key).delete(retry=self._retry)
            except api_exceptions.NotFound:
                pass

    # Helpers

    def _key(self, datum_id: str, name: str) -> str:
        # GCS refuses line breaks in object names; the output keeps its name in the database.
        base = PurePosixPath(name).name.replace("\r", "_").replace("\n", "_")
        if not base:
            raise ValueError(f"no file name in {name!r}")
        key = "/".join(part for part in (self.prefix, datum_id, base) if part)
        if len(key.encode()) > MAX_NAME_BYTES:
            raise CloudError(f"file name {base!r} is too long for GCS: the object name would pass 1024 bytes")
        return key

    def _credentials(self) -> google.auth.credentials.Credentials:
        with self._lock:
            if self._creds is None:
                if self.credentials == "anonymous":
                    self._creds = google.auth.credentials.AnonymousCredentials()
                else:
                    self._creds, adc_project = google.auth.default(scopes=SCOPES)
                    self.project = self.project or adc_project
            return self._creds

    def _gcs(self) -> storage.Client:
        """The client, made on first use: settings are checked at once, ADC looked up only when needed."""
        credentials = self._credentials()
        with self._lock:
            if self._client is None:
                options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
                self._client = storage.Client(project=self.project, credentials=credentials, client_options=options)
            return self._client

    def _bucket(self) -> storage.Bucket:
        return self._gcs().bucket(self.bucket)

    def _sign(self, blob: storage.Blob, method: str, expires_s: int) -> str:
        if not 1 <= expires_s <= MAX_EXPIRES_S:
            raise ValueError(f"a signed URL lives 1 s to 7 days, not {expires_s} s")
        signer = self._signer()
        try:
            return str(blob.generate_signed_url(
                version="v4", method=method, expiration=datetime.timedelta(seconds=expires_s),
                api_access_endpoint=self.endpoint_url or GCS_HOST, client=self._gcs(), **signer))
        except google.auth.exceptions.TransportError as exc:
            if "service_account_email" not in signer:
                raise
            raise ConfigError(f"IAM could not sign for {signer['service_account_email']}: {exc}; the service "
                              "account needs roles/iam.serviceAccountTokenCreator on itself, and the VM the "
                              "cloud-platform scope") from exc

    def _signer(self) -> dict[str, Any]:
        """generate_signed_url's arguments that say who signs."""
        if self._signing_credentials is not None:
            return {"credentials": self._signing_credentials}
        creds = self._credentials()
        if isinstance(creds, google.auth.credentials.Signing):
            return {"credentials": creds}
        if getattr(creds, "service_account_email", None) and hasattr(creds, "refresh"):
            # A VM's metadata-server credentials hold no key: IAM's signBlob signs for them.
            if not creds.valid:
                creds.refresh(google.auth.transport.requests.Request())
            return {"service_account_email": creds.service_account_email, "access_token": creds.token}
        raise ConfigError(f"signing a URL for gs://{self.bucket}: these credentials ({type(creds).__name__}) "
                          f"cannot sign; {ADC_HELP} (a user login cannot sign)")

    @contextmanager
    def _errors(self, doing: str, in_ours: bool = False) -> Iterator[None]:
        """Map the SDK's failures onto the CloudError family. in_ours: the call writes into or
        reads from our own bucket, so a 404 means the bucket is missing."""
        try:
            yield
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ConfigError(f"{doing}: no Google credentials found ({exc}); {ADC_HELP}") from exc
        except google.auth.exceptions.RefreshError as exc:
            if getattr(exc, "retryable", False):
                raise TransientCloudError(f"{doing}: could not refresh the Google credentials: {exc}") from exc
            raise ConfigError(f"{doing}: the Google credentials were refused: {exc}; {ADC_HELP}") from exc
        except google.auth.exceptions.TransportError as exc:
            raise TransientCloudError(f"{doing}: {exc}; try again later") from exc
        except api_exceptions.GoogleAPICallError as exc:
            raise _classify(doing, exc, in_ours) from exc
        except api_exceptions.RetryError as exc:  # only what is worth retrying is retried
            last = _translate(exc.cause)
            said = f"GCS said {last.code}: {_message(last)}" if isinstance(last, api_exceptions.GoogleAPICallError) \
                else " ".join(str(last).split())
            raise TransientCloudError(f"{doing}: still failing after retries ({said}); try again later") from exc
        except InvalidResponse as exc:  # a resumable upload's own requests are not translated
            raise _classify(doing, _translate(exc), in_ours) from exc
        except DataCorruption as exc:
            raise TransientCloudError(f"{doing}: the bytes received do not match GCS's checksum; "
                                      "try again") from exc
        except requests.RequestException as exc:  # connection refused, timeouts, a cut stream
            raise TransientCloudError(f"{doing}: {exc}") from exc


class _HashingSink:
    """A writable file that hashes what goes through it; seek(0) starts over, which the
    library does when GCS restarts a decompressed download from the beginning."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (offset, whence) != (0, io.SEEK_SET):
            raise io.UnsupportedOperation("only a restart from the beginning is supported")
        self.fh.seek(0)
        self.fh.truncate()
        self.digest = hashlib.sha256()
        self.size = 0
        return 0


def _classify(doing: str, exc: api_exceptions.GoogleAPICallError, in_ours: bool) -> CloudError:
    status = exc.code or 0
    reason = f" ({exc.reason})" if getattr(exc, "reason", None) else ""
    text = f"{doing}: GCS said {status}{reason}: {_message(exc)}"
    if isinstance(exc, (api_exceptions.Unauthorized, api_exceptions.Forbidden)):
        return ConfigError(f"{text}; check the datastore's bucket and that the account may read and write "
                           "objects in it (roles/storage.objectUser)")
    if isinstance(exc, api_exceptions.NotFound) and (in_ours or "bucket does not exist" in str(exc.message)):
        return ConfigError(f"{text}; check that the datastore's bucket exists")
    if status in (408, 429) or status >= 500:
        return TransientCloudError(f"{text}; try again later")
    return CloudError(text)


def _translate(exc: BaseException | None) -> BaseException | None:
    """google-resumable-media's InvalidResponse as the api_core error of its HTTP status."""
    if isinstance(exc, InvalidResponse):
        response = exc.response
        return api_exceptions.from_http_status(getattr(response, "status_code", 0), str(exc), response=response)
    return exc


def _message(exc: api_exceptions.GoogleAPICallError) -> str:
    """GCS's own words when the answer carries its JSON error, else what the SDK made of it."""
    try:
        return str(exc.response.json()["error"]["message"])  # type: ignore[union-attr]
    except Exception:
        return " ".join(str(exc.message).split())


def _valid_bucket(name: str) -> bool:
    if not BUCKET_RULE.fullmatch(name) or ".." in name or name.startswith("goog") or "google" in name:
        return False
    if "." in name:
        return len(name) <= 222 and all(0 < len(part) <= 63 for part in name.split(".")) and not is_ip_address(name)
    return 3 <= len(name) <= 63
