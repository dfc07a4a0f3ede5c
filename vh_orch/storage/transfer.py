"""Moving files between a remote machine and an object store through signed URLs.

The daemon only signs URLs; the machine moves the bytes with a POSIX shell script
(`upload_script`, `download_script`) that needs nothing but sh, curl, dd and
coreutils. Every value in a script is shlex-quoted, so a file name is data, never
code. The script reports back on stdout with one line per file or part
(`FILE <index> <size> <sha256>`, `ETAG <index> <part> <etag>`), read by `parse_files`
and `parse_etags`. The datastores (s3.py, gcs.py) say how a file goes up: one signed
PUT (`UploadPlan.url`), or the signed parts of a multipart upload (`UploadPlan.parts`).
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import NamedTuple

MiB = 1024 * 1024


class Part(NamedTuple):
    number: int
    offset: int
    length: int
    url: str  # a signed URL for PUTting this part


@dataclass(frozen=True)
class UploadPlan:
    """How a remote machine uploads one file: one signed PUT (`url`) or the parts of a multipart upload."""

    datum_id: str
    uri: str
    key: str
    size: int
    url: str | None = None
    upload_id: str | None = None
    parts: tuple[Part, ...] = ()


# Shell scripts for the remote machine

_SCRIPT_HEAD = r"""set -u
fail() { printf 'vh-orch: %s\n' "$1" >&2; exit 1; }
report() {  # report INDEX FILE
  size=$(wc -c < "$2") && sum=$(sha256sum < "$2") || fail "cannot read $2"
  printf 'FILE %s %s %s\n' "$1" $size "${sum%% *}"
}
"""

_UPLOAD_FUNCTIONS = r"""tmp=$(mktemp -d) || fail "cannot make a temporary folder"
trap 'rm -rf -- "$tmp"' EXIT
send() {  # send CURL-ARGS...: a PUT whose connection broke (or that timed out) goes again, up to 5 times;
          # a part of a multipart upload is sent again, not its file. The store's refusals are final.
  n=0
  while :; do
    curl -sS -f --retry 3 --retry-delay 1 "$@" && return 0
    code=$?
    case $code in 7|18|28|52|55|56) ;; *) return $code ;; esac
    n=$((n + 1)); [ "$n" -lt 5 ] || return $code
    sleep 1
  done
}
put() {  # put INDEX FILE URL
  send -o /dev/null -T "$2" "$3" || fail "upload of $2 failed"
}
part() {  # part INDEX FILE NUMBER SKIP_MIB COUNT_MIB URL
  p="$tmp/part-$1-$3"
  dd if="$2" of="$p" bs=1048576 skip="$4" count="$5" 2>/dev/null || fail "cannot read part $3 of $2"
  send -o /dev/null -D "$p.headers" -T "$p" "$6" || fail "upload of part $3 of $2 failed"
  etag=$(tr -d '\r"' < "$p.headers" | sed -n 's/^[Ee][Tt][Aa][Gg]:[[:space:]]*//p' | tail -n 1)
  rm -f -- "$p" "$p.headers"
  [ -n "$etag" ] || fail "no ETag in the answer to part $3 of $2"
  printf 'ETAG %s %s %s\n' "$1" "$3" "$etag"
}
# Uploads (whole files and parts) run JOBS at a time; the script fails if any of them failed.
pids=""
job() {
  "$@" &
  pids="$pids $!"
  set -- $pids
  if [ $# -ge "$JOBS" ]; then settle; fi
}
settle() {
  for pid in $pids; do wait "$pid" || failed=1; done
  pids=""
}
failed=0
"""

_DOWNLOAD_FUNCTIONS = r"""get() {  # get FOLDER FILE URL
  mkdir -p -- "$1" && curl -sS -f --retry 3 -o "$2" "$3" || fail "download of $2 failed"
}
"""


def _remote_path(base_dir: str, rel: str) -> str:
    parts = PurePosixPath(rel).parts
    if not base_dir or not rel or PurePosixPath(rel).is_absolute() or ".." in parts or "\0" in rel:
        raise ValueError(f"{rel!r} is not a relative path inside {base_dir!r}")
    return posixpath.join(base_dir, rel)


def upload_script(base_dir: str, items: list[tuple[str, UploadPlan]], jobs: int = 4) -> str:
    """A sh script uploading base_dir/<path> per plan, `jobs` files or parts at a time; prints FILE lines,
    and ETAG lines for multipart parts (each line whole: they come from concurrent jobs)."""
    q = shlex.quote
    lines = [_SCRIPT_HEAD + f"JOBS={int(jobs)}\n" + _UPLOAD_FUNCTIONS]
    for index, (rel, plan) in enumerate(items):
        path = q(_remote_path(base_dir, rel))
        if plan.url is not None:
            lines.append(f"job put {index} {path} {q(plan.url)}")
        for part in plan.parts:
            if part.offset % MiB or (part.length % MiB and part.offset + part.length != plan.size):
                raise ValueError(f"part {part.number} of {plan.uri} is not cut at whole MiB")
            lines.append(f"job part {index} {path} {part.number} {part.offset // MiB} {-(-part.length // MiB)} "
                         f"{q(part.url)}")
        lines.append(f"job report {index} {path}")
    lines.append('settle; [ "$failed" = 0 ] || exit 1')
    return "\n".join(lines) + "\n"


def download_script(base_dir: str, items: list[tuple[str, str]]) -> str:
    """A sh script fetching each signed GET url to base_dir/<path>; prints a FILE line per file."""
    q = shlex.quote
    lines = [_SCRIPT_HEAD + _DOWNLOAD_FUNCTIONS]
    for index, (rel, url) in enumerate(items):
        path = _remote_path(base_dir, rel)
        lines.append(f"get {q(posixpath.dirname(path))} {q(path)} {q(url)}")
        lines.append(f"report {index} {q(path)}")
    return "\n".join(lines) + "\n"


def parse_etags(stdout: str) -> dict[int, dict[int, str]]:
    """Item index → part number → ETag, from an upload script's output."""
    etags: dict[int, dict[int, str]] = {}
    for line in stdout.splitlines():
        if line.startswith("ETAG "):
            _, index, number, etag = line.split(" ", 3)
            etags.setdefault(int(index), {})[int(number)] = etag
    return etags


def parse_files(stdout: str) -> dict[int, tuple[int, str]]:
    """Item index → (size, sha256), from a script's FILE lines."""
    files: dict[int, tuple[int, str]] = {}
    for line in stdout.splitlines():
        if line.startswith("FILE "):
            _, index, size, digest = line.split(" ")
            files[int(index)] = (int(size), digest)
    return files
