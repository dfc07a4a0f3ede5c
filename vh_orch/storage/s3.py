"""The S3 datastore: objects at s3://<bucket>/<prefix>/<datum id>/<file name>.

Two ways bytes move:
- through this process (`put`, `get`): the sha256 is computed on the very bytes sent
  or received. Files above the multipart threshold go up part by part, each part read
  once, hashed, then sent, so the checksum always describes what S3 stored.
- directly between a remote machine and S3 (`plan_upload`, `presigned_get`): the
  daemon only signs URLs and the machine moves the bytes with the shell scripts of
  transfer.py (`upload_script`, `download_script`), one presigned
  PUT per file or one per part of a multipart upload.

Credentials come only from boto3's default chain; vh-orch stores none. Failures map
onto the CloudError family: missing bucket, credentials or permissions → ConfigError
(the fix is in the settings), 5xx, throttling and connection trouble → TransientCloudError,
anything else → CloudError, always with S3's own code and message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from vh_orch import boto
from vh_orch.errors import CloudError, ConfigError, TransientCloudError
from vh_orch.storage.datastore import CHUNK, StoredFile, check_endpoint_url, is_ip_address, split_object_uri
from vh_orch.storage.transfer import MiB, Part, UploadPlan

log = logging.getLogger(__name__)

MIN_PART = 5 * MiB  # S3's minimum for every part but the last
MAX_PART = 5 * 1024 * MiB  # and the maximum for a part or a single PUT
MAX_PARTS = 10_000
BUCKET_RULE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
ACCEPTED_URIS = ("use s3://bucket or s3://bucket/prefix (bucket: 3-63 of a-z 0-9 . -, "
                 "starting and ending with a letter or digit)")
CONFIG_CODES = {"NoSuchBucket", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                "ExpiredToken", "InvalidToken", "AuthorizationHeaderMalformed", "PermanentRedirect"}
TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "ServiceUnavailable",
                   "InternalError"}


def parse_s3_root(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of a datastore URI s3://bucket[/prefix]; ConfigError saying how to fix a bad one."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ConfigError(f"datastore URI {uri!r} is not an s3:// URI; {ACCEPTED_URIS}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ConfigError(f"datastore URI {uri!r} names no bucket; {ACCEPTED_URIS}")
    if not BUCKET_RULE.fullmatch(bucket) or ".." in bucket or is_ip_address(bucket):
        raise ConfigError(f"datastore URI {uri!r}: {bucket!r} is not a valid S3 bucket name; {ACCEPTED_URIS}")
    if any(c in prefix for c in "?#\0"):
        raise ConfigError(f"datastore URI {uri!r}: the prefix may not contain '?', '#' or NUL; {ACCEPTED_URIS}")
    return bucket, "/".join(segment for segment in prefix.split("/") if segment)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an object URI s3://bucket/key."""
    return split_object_uri(uri, "s3", "an S3")


def check_s3_settings(uri: str, endpoint_url: str | None = None, region: str | None = None,
                      multipart_threshold: int = 64 * MiB, part_size: int = 64 * MiB) -> tuple[str, str]:
    """Validate S3Datastore's arguments without contacting anything; returns (bucket, prefix)."""
    bucket, prefix = parse_s3_root(uri)
    check_endpoint_url(endpoint_url)
    if region is not None and (not isinstance(region, str) or not re.fullmatch(r"[a-z0-9-]+", region)):
        raise ConfigError(f"datastore region {region!r} is not a region name like eu-west-1")
    if not 0 <= multipart_threshold <= MAX_PART:
        raise ConfigError(f"datastore multipart threshold {multipart_threshold} must be between 0 and 5 GiB")
    if part_size % MiB or not MIN_PART <= part_size <= MAX_PART:
        raise ConfigError(f"datastore part size {part_size} must be a whole number of MiB between 5 MiB and 5 GiB")
    return bucket, prefix


class S3Datastore:
    """Objects in an S3 (or S3-compatible) bucket, under an optional prefix.

    Give `region` (the bucket's) so that presigned URLs are signed for the right place;
    give `endpoint_url` for S3-compatible stores (MinIO, Ceph, ...), which are then
    addressed path-style.
    """

    scheme = "s3"  # the URIs this store signs for (see SignedTransfers)

    def __init__(self, uri: str, endpoint_url: str | None = None, region: str | None = None,
                 multipart_threshold: int = 64 * MiB, part_size: int = 64 * MiB) -> None:
        self.bucket, self.prefix = check_s3_settings(uri, endpoint_url, region, multipart_threshold, part_size)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        config = Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=10,
            read_timeout=60,
            # We hash with sha256 ourselves. botocore's default CRC32 trailers are refused by
            # several S3-compatible stores, and some botocore versions put checksum parameters
            # into presigned URLs that a plain curl upload cannot satisfy.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # A session of our own: boto3's default session is not safe to share between threads.
        self._s3 = boto.session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

    # Through this process

    def put(self, source: Path, name: str) -> StoredFile:
        """Store a local file under a new datum id; returns its URI and the sha256 of the bytes sent."""
        datum_id = uuid.uuid4().hex
        key = self._key(datum_id, name)
        digest = hashlib.sha256()
        with open(source, "rb") as fh, self._errors(f"storing {source} as s3://{self.bucket}/{key}"):
            size = os.fstat(fh.fileno()).st_size
            if size <= self.multipart_threshold:
                body = fh.read()
                digest.update(body)
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                size = len(body)
            else:
                size = self._put_multipart(key, fh, self._part_size(size), digest)
        return StoredFile(datum_id=datum_id, uri=f"s3://{self.bucket}/{key}", size=size, sha256=digest.hexdigest())

    def _put_multipart(self, key: str, fh: BinaryIO, part_size: int, digest: hashlib._Hash) -> int:
        upload_id = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            parts, size = [], 0
            while chunk := fh.read(part_size):
                digest.update(chunk)
                size += len(chunk)
                number = len(parts) + 1
                answer = self._s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                              PartNumber=number, Body=chunk)
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._s3.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
            return size
        except BaseException:
            self._abort(key, upload_id)
            raise

    def get(self, uri: str, dest: Path) -> tuple[int, str]:
        """Download an object (from any bucket) to dest atomically; returns its size and sha256."""
        bucket, key = split_s3_uri(uri)
        digest = hashlib.sha256()
        size = 0
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._errors(f"fetching {uri}"), open(tmp, "wb") as fh:
                # botocore checks the length against Content-Length, so a cut stream raises.
                for chunk in self._s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(CHUNK):
                    digest.update(chunk)
                    fh.write(chunk)
                    size += len(chunk)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()

    def stream(self, uri: str) -> tuple[int, Iterator[bytes]]:
        """An object's size and its bytes as they arrive (nothing lands on this host's disk); reading
        them raises TransientCloudError if the stream is cut (botocore checks its length)."""
        bucket, key = split_s3_uri(uri)
        with self._errors(f"fetching {uri}"):
            answer = self._s3.get_object(Bucket=bucket, Key=key)

        def chunks() -> Iterator[bytes]:
            body = answer["Body"]
            try:
                with self._errors(f"fetching {uri}"):
                    yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return int(answer["ContentLength"]), chunks()

    def stat(self, uri: str) -> tuple[int, str]:
        """(size, version) of an object, from one HEAD: the version (its ETag, and its VersionId in a
        versioned bucket) changes whenever its content does."""
        bucket, key = split_s3_uri(uri)
        with self._errors(f"looking at {uri}"):
            head = self._s3.head_object(Bucket=bucket, Key=key)
        return int(head["ContentLength"]), f"{head.get('ETag', '')} {head.get('VersionId', '')}"

    # Directly between a remote machine and S3

    def presigned_get(self, uri: str, expires_s: int = 3600) -> str:
        """A URL anyone holding it can GET the object with, for expires_s seconds."""
        bucket, key = split_s3_uri(uri)
        with self._errors(f"signing a download of {uri}"):
            return self._s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                   ExpiresIn=expires_s)

    def plan_upload(self, name: str, size: int, expires_s: int = 3600) -> UploadPlan:
        """Reserve a datum id for a file of `size` bytes and sign the URLs a machine uploads it with.

        Up to the multipart threshold that is one PUT; above it a multipart upload is started
        (finish it with complete_upload, or abort_upload) with whole-MiB parts, grown so that
        there are never more than 10,000.
        """
        datum_id = uuid.uuid4().hex
        key = self._key(datum_id, name)
        uri = f"s3://{self.bucket}/{key}"
        with self._errors(f"planning the upload of {uri}"):
            if size <= self.multipart_threshold:
                url = self._s3.generate_presigned_url("put_object", Params={"Bucket": self.bucket, "Key": key},
                                                      ExpiresIn=expires_s)
                return UploadPlan(datum_id, uri, key, size, url=url)
            upload_id = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
            part_size = self._part_size(size)
            parts = tuple(
                Part(number, offset, min(part_size, size - offset), self._s3.generate_presigned_url(
                    "upload_part", ExpiresIn=expires_s,
                    Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number}))
                for number, offset in enumerate(range(0, size, part_size), start=1)
            )
        return UploadPlan(datum_id, uri, key, size, upload_id=upload_id, parts=parts)

    def complete_upload(self, plan: UploadPlan, etags: dict[int, str]) -> None:
        """Finish a planned upload (etags: part number → ETag, from parse_etags) and check the stored size."""
        with self._errors(f"completing the upload of {plan.uri}"):
            if plan.upload_id is not None:
                missing = sorted({p.number for p in plan.parts} - set(etags))
                if missing:
                    raise CloudError(f"upload of {plan.uri}: no ETag for part(s) {missing}; the upload is incomplete")
                parts = [{"PartNumber": p.number, "ETag": f'"{etags[p.number]}"'} for p in plan.parts]
                self._s3.complete_multipart_upload(Bucket=self.bucket, Key=plan.key, UploadId=plan.upload_id,
                                                   MultipartUpload={"Parts": parts})
            stored = self._s3.head_object(Bucket=self.bucket, Key=plan.key)["ContentLength"]
        if stored != plan.size:
            raise CloudError(f"upload of {plan.uri}: S3 holds {stored} bytes, {plan.size} were planned "
                             "(did the file change while it was uploaded?)")

    def abort_upload(self, plan: UploadPlan) -> None:
        """Give up a planned upload: abort the multipart upload, or delete what a single PUT may have written."""
        if plan.upload_id is not None:
            self._abort(plan.key, plan.upload_id)
            return
        with self._errors(f"deleting {plan.uri}"):
            self._s3.delete_object(Bucket=self.bucket, Key=plan.key)

    # Helpers

    def _key(self, datum_id: str, name: str) -> str:
        base = PurePosixPath(name).name
        if not base:
            raise ValueError(f"no file name in {name!r}")
        return "/".join(part for part in (self.prefix, datum_id, base) if part)

    def _part_size(self, size: int) -> int:
        """The configured part size, grown in whole MiB until size fits in MAX_PARTS parts."""
        needed_mib = -(-size // (MAX_PARTS * MiB))
        return max(self.part_size, needed_mib * MiB)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as exc:
            log.warning("could not abort multipart upload %s of s3://%s/%s: %s", upload_id, self.bucket, key, exc)

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except NoCredentialsError as exc:
            raise ConfigError(f"{doing}: no AWS credentials found (boto3 looks at AWS_PROFILE, AWS_ACCESS_KEY_ID, "
                              "~/.aws and the instance role)") from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = error.get("Code") or str(status)
            text = f"{doing}: S3 said {code}: {error.get('Message') or exc}"
            if code in CONFIG_CODES:
                raise ConfigError(f"{text}; check the datastore's bucket, region and credentials") from exc
            if code in TRANSIENT_CODES or status >= 500:
                raise TransientCloudError(f"{text}; try again later") from exc
            raise CloudError(text) from exc
        except BotoCoreError as exc:  # connection refused, timeouts, a cut stream
            raise TransientCloudError(f"{doing}: {exc}") from exc
