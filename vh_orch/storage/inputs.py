"""Inputs: checked when an execution is submitted, fetched into its folder before it starts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import requests

from vh_orch.errors import UserInputError, VhOrchError
from vh_orch.storage.datastore import CHUNK, file_uri_path
from vh_orch.storage.datastores import download_uri

HTTP_TIMEOUT = (10, 60)  # connect, read (seconds)
ACCEPTED_URLS = ("use a local path, file://, http(s)://, s3://bucket/key, gs://bucket/key, datum://ID (or ALIAS) or "
                 "dataset://NAME/VERSION")


class InputFetchError(Exception):
    """An input could not be fetched; the message becomes the execution's status reason."""


def normalise_input_url(name: str, url: str, datum_exists: Callable[[str], bool], local_ok: bool = True) -> str:
    """Check one input URL at submit time; a local path becomes a file:// URL.

    local_ok=False (a submission over the HTTP API): paths and file:// URLs are refused, since the
    server's files are not the caller's to read."""
    url = url.strip()
    if not local_ok and ("://" not in url or urlparse(url).scheme == "file"):
        raise UserInputError(f"input {name!r}: {url!r} is a file on the server, which an API submission cannot "
                             "use; give an http(s)://, s3://, gs:// or datum:// URL")
    if "://" not in url:
        path = Path(url).expanduser()
        if not path.is_file():
            raise UserInputError(f"input {name!r}: {url!r} is not a URL and no such local file exists")
        return path.resolve().as_uri()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if not file_uri_path(url).is_file():
            raise UserInputError(f"input {name!r}: no such file {url!r}")
    elif parsed.scheme == "datum":
        if not parsed.netloc or not datum_exists(parsed.netloc):
            raise UserInputError(f"input {name!r}: no datum {url!r}: give an output's id (`vh-orch exec outputs "
                                 "ID`) or a datum alias of this project")
    elif parsed.scheme in ("s3", "gs"):
        bucket, _, key = url.partition("://")[2].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise UserInputError(f"input {name!r}: {url!r} needs a bucket and an object key; {ACCEPTED_URLS}")
    elif parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserInputError(f"input {name!r}: unsupported URL {url!r}; {ACCEPTED_URLS}")
    return url


def safe_file_name(input_name: str, file_name: str) -> str:
    """A file name that stays inside the input's folder, or InputFetchError."""
    pure = PurePosixPath(file_name)
    if (
        not file_name
        or "\0" in file_name
        or "\\" in file_name
        or len(pure.parts) != 1
        or file_name in (".", "..")
        or pure.is_absolute()
    ):
        raise InputFetchError(f"input {input_name!r}: file name {file_name!r} would escape the input folder")
    return file_name


@dataclass
class InputFile:
    """One file of an input: where it comes from, its name in the input's folder, its inputs.json entry."""

    name: str  # the input's
    file_name: str
    source_uri: str  # a datum resolved to where it is stored
    entry: dict[str, Any]  # its inputs.json entry, completed with size and sha256 once it is fetched
    datum: tuple[int | None, str | None] | None = None  # a datum's stored size and sha256

    @property
    def rel_path(self) -> str:
        return f"{self.name}/{self.file_name}"

    def complete(self, size: int, sha256: str) -> None:
        self.entry["size"] = size
        self.entry["checksums"] = {"sha256": sha256}


# A datum's (stored URI, stored name, size, sha256)
DatumRef = tuple[str, str, int | None, str | None]


def plan_inputs(
    urls: dict[str, list[str]],
    filenames: dict[str, str | None],
    visible_root: str,
    resolve_datum: Callable[[str], DatumRef],
) -> tuple[list[InputFile], dict[str, Any]]:
    """Every input file (with a name that stays inside its input's folder), and the inputs.json content
    whose entries they complete once fetched.

    visible_root is where the inputs folder appears to the command (/valohai/inputs in a
    container, the host folder in the process runtime)."""
    config: dict[str, Any] = {}
    planned: list[InputFile] = []
    for name, url_list in urls.items():
        files = []
        seen: set[str] = set()
        for url in url_list:
            source_uri, datum = url, None
            if url.startswith("datum://"):
                source_uri, stored_name, size, sha256 = resolve_datum(urlparse(url).netloc)
                default_name = PurePosixPath(stored_name).name
                datum = (size, sha256)
            elif url.startswith(("s3://", "gs://")):
                default_name = PurePosixPath(url).name  # S3 keys and GCS names are not percent-encoded
            else:
                default_name = unquote(PurePosixPath(urlparse(url).path).name)
            wanted = filenames.get(name) if len(url_list) == 1 and filenames.get(name) else default_name
            file_name = safe_file_name(name, wanted or "")
            if file_name in seen:
                raise InputFetchError(f"input {name!r}: two URLs give the same file name {file_name!r}")
            seen.add(file_name)
            entry = {
                "name": file_name,
                "path": f"{visible_root}/{name}/{file_name}",
                "uri": url,
                "size": 0,
                "checksums": {"sha256": ""},
            }
            files.append(entry)
            planned.append(InputFile(name, file_name, source_uri, entry, datum))
        config[name] = {"files": files}
    return planned, config


def fetch_inputs(
    urls: dict[str, list[str]],
    filenames: dict[str, str | None],
    inputs_dir: Path,
    visible_root: str,
    resolve_datum: Callable[[str], tuple[str, str]],
    *,
    datastore_settings: object = None,
) -> dict[str, Any]:
    """Fetch every input into inputs_dir/<name>/<file> here; returns the inputs.json content.

    datastore_settings (the environment's `datastore` setting) gives the endpoint and region
    for s3:// URLs, and the endpoint, project and credentials for gs:// URLs."""
    planned, config = plan_inputs(urls, filenames, visible_root, lambda d: (*resolve_datum(d), None, None))
    for file in planned:
        (inputs_dir / file.name).mkdir(parents=True, exist_ok=True)
        file.complete(*fetch_file(file.source_uri, inputs_dir / file.rel_path, file.name, datastore_settings))
    for name in urls:
        (inputs_dir / name).mkdir(parents=True, exist_ok=True)
    return config


def fetch_file(uri: str, dest: Path, input_name: str, datastore_settings: object,
               http: requests.Session | None = None) -> tuple[int, str]:
    """Fetch one file here; its size and sha256, or InputFetchError saying why not.

    http: the session http(s) URLs are fetched with (a restricted execution's is guarded by the fetch
    policy, storage/fetch_policy.py); plain requests when None."""
    scheme = urlparse(uri).scheme
    with _as_input_error(uri, input_name):
        if scheme in ("http", "https"):
            return _download(uri, dest, http)
        if scheme in ("file", "s3", "gs"):
            return download_uri(uri, dest, datastore_settings)
    raise InputFetchError(f"input {input_name!r}: unsupported URL {uri!r}")


@contextmanager
def _as_input_error(uri: str, input_name: str) -> Iterator[None]:
    """A source's failure (refused by the fetch policy, unreachable, answering an error) as the
    InputFetchError that names the input."""
    from vh_orch.storage.fetch_policy import FetchRefused

    try:
        yield
    except InputFetchError:
        raise
    except FetchRefused as exc:
        raise InputFetchError(f"input {input_name!r}: {exc}") from None
    except (OSError, requests.RequestException, VhOrchError) as exc:
        raise InputFetchError(f"input {input_name!r}: cannot fetch {uri}: {exc}") from None


def stream_file(uri: str, input_name: str, datastore_settings: object,
                http: requests.Session | None = None) -> tuple[int, Iterator[bytes]] | None:
    """One file's size and bytes as they arrive, for sending on without landing on this host's disk
    (an s3:// object, or an http(s) answer that says its length and is not re-encoded); None where
    it cannot be streamed (fetch_file it). Reading the bytes raises OSError if the source fails or
    sends more or fewer than it said; opening it, InputFetchError as fetch_file does."""
    scheme = urlparse(uri).scheme
    with _as_input_error(uri, input_name):
        if scheme == "s3":
            from vh_orch.storage.datastores import bucket_datastore

            size, chunks = bucket_datastore(uri, datastore_settings).stream(uri)  # type: ignore[attr-defined]
            return size, _exactly(uri, size, chunks)
        if scheme in ("http", "https"):
            resp = (http or requests).get(uri, stream=True, timeout=HTTP_TIMEOUT)
            if resp.status_code >= 400:
                resp.close()
                raise InputFetchError(f"input {input_name!r}: cannot fetch {uri}: HTTP {resp.status_code} {resp.reason}")
            length = resp.headers.get("Content-Length", "")
            if not length.isdigit() or resp.headers.get("Content-Encoding", "identity") != "identity":
                resp.close()
                return None

            def body() -> Iterator[bytes]:
                with resp:
                    yield from resp.iter_content(CHUNK)

            return int(length), _exactly(uri, int(length), body())
    return None


def _exactly(uri: str, size: int, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks, which must come to size bytes: any failure to read them, or another count, is an OSError."""
    got = 0
    try:
        for chunk in chunks:
            got += len(chunk)
            if got > size:
                raise OSError(f"{uri} sent more than the {size} bytes it said")
            yield chunk
    except OSError:
        raise
    except Exception as exc:  # the SDK's own errors (a cut stream): the source failed
        raise OSError(f"fetching {uri} failed: {exc}") from None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if got != size:
        raise OSError(f"{uri} ended after {got} of its {size} bytes")


def _download(url: str, dest: Path, http: requests.Session | None) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with (http or requests).get(url, stream=True, timeout=HTTP_TIMEOUT) as resp:
        if resp.status_code >= 400:
            raise InputFetchError(f"cannot fetch {url}: HTTP {resp.status_code} {resp.reason}")
        with open(dest, "wb") as fh:
            for chunk in resp.iter_content(CHUNK):
                digest.update(chunk)
                fh.write(chunk)
                size += len(chunk)
    return size, digest.hexdigest()
