"""A cache of inputs on each machine: a file fetched once serves every later execution there.

Entries are content-addressed by the input's identity (`identify`): a datum's sha256, an
S3 object's ETag, a GCS object's generation, an HTTP resource's validators, a local file's
inode and times. A file that has no stable identity (an HTTP answer without ETag or
Last-Modified) is fetched for each execution, as before.

The cache lives on the machine and is kept by one POSIX shell script (CACHE_SCRIPT, sh +
coreutils + flock, and curl for signed URLs) that the daemon runs there once per input file,
over SSH or as a local process (`Shell`): under the entry's lock it says whether the entry is
there and sound, receives the bytes when it is not (from the daemon on stdin, a large file
over the shell's bulk path where it has one, bootstrap/openssh.py; or from a signed URL
itself), verifies size and sha256, evicts least recently used entries that no running
execution uses to stay under the bound, and puts the file in the execution's folder.
A container gets the entry's file mounted read-only at its place (no copy: a 10 GB input
costs nothing the second time, and even root in the container cannot write to a read-only
mount); the process runtime gets a copy (a reflink where the filesystem has them). Never a
link: a command that runs as root could write through a hard link into the cache. Two executions that want the
same file at once queue on its lock: the first fetches, the second finds it there.

An entry is verified when it is made (size, and sha256 against the expected one when known)
and its stat (size, mtime, ctime, inode) is stamped; at each use a different stat (anything
written to it, even with its times put back, changes ctime) means its sha256 is checked
again, and a mismatch throws it away and fetches again.

Layout under the root: `<key>/data` (0444), `<key>/size`, `<key>/sha256`, `<key>/stamp`,
`<key>/used` (its mtime orders eviction), `<key>/pins/<pin>` (an execution using it), and
`<key>.lock`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

import requests

from vh_orch import failpoints
from vh_orch.storage.datastore import CHUNK, file_uri_path

log = logging.getLogger(__name__)

GiB = 1024**3
LOCK_WAIT_S = 3600  # how long an execution waits for another's download of the same file
HEAD_TIMEOUT = (5, 15)

# The bulk path (Bulk.send) runs this with the bytes on its stdin: READY once it runs, then all of its
# stdin into the file ($1). The cache script that asked for them checks their size and sha256.
TAKE_SCRIPT = r"""echo READY
cat > "$1" || { printf 'vh-orch: cannot write %s (is the disk full?)\n' "${1##*/}" >&2; exit 1; }
"""

CACHE_SCRIPT = r"""set -u
trap 'exit 129' HUP INT PIPE TERM  # a connection cut (sshd hangs up) still runs the EXIT trap: no partial entry
R=$1 K=$2 SIZE=$3 SHA=$4 DEST=$5 URL=$6 PIN=$7 BOUND=$8 WAIT=$9 MODE=${10}
E=$R/$K
fail() { printf 'vh-orch: %s\n' "$1" >&2; exit 1; }
digest() {  # openssl first: it uses the CPU's SHA instructions, which coreutils' sha256sum does not
  if command -v openssl >/dev/null 2>&1; then set -- $(openssl dgst -sha256 -r "$1"); else set -- $(sha256sum "$1"); fi
  printf '%s' "$1"
}
stamp() { stat -c '%s %y %z %i' -- "$1"; }
total() { cat "$R"/*/size 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'; }
receive() {  # receive FILE: from the signed URL, else from the daemon
  if [ -n "$URL" ]; then curl -sS -f --retry 3 -o "$1" "$URL" || fail "download of ${DEST##*/} failed"
  else  # the daemon says how many bytes follow: a stream it cuts short is never taken for the whole file
    echo "SEND $1"; read -r n how || fail "the daemon sent no size"
    # SENT: the daemon sent them over a connection of its own (TAKE_SCRIPT); else they follow on stdin.
    [ "$how" = SENT ] || head -c "$n" > "$1" || fail "cannot write ${DEST##*/} (is the disk full?)"
    [ -f "$1" ] && [ "$(wc -c < "$1")" = "$n" ] || fail "${DEST##*/} was cut short"
  fi
  got=$(wc -c < "$1")
  [ -z "$SIZE" ] || [ "$got" = "$SIZE" ] || fail "${DEST##*/} arrived with $got bytes, $SIZE were expected"
  sum=$(digest "$1")
  [ -z "$SHA" ] || [ "$sum" = "$SHA" ] || fail "${DEST##*/} arrived damaged: its sha256 is $sum, $SHA was expected"
}
place() {  # place FILE: a copy in the execution's folder, never a link into the cache
  { cp --reflink=auto -- "$1" "$DEST.part" 2>/dev/null || cp -- "$1" "$DEST.part"; } &&
    chmod 644 -- "$DEST.part" && mv -f -- "$DEST.part" "$DEST" || fail "cannot place ${DEST##*/} (is the disk full?)"
}
direct() {  # the file straight into the execution's folder, not cached
  trap 'rm -f -- "$DEST.part"' EXIT
  receive "$DEST.part"; chmod 644 -- "$DEST.part" && mv -f -- "$DEST.part" "$DEST" || fail "cannot place ${DEST##*/}"
  trap - EXIT; echo "FILE $got $sum $(total)"; exit 0
}
evict() {  # evict NEEDED: drop least recently used entries nobody uses until NEEDED more bytes fit
  exec 8>"$R/.evict.lock" && flock -w "$WAIT" 8 || fail "the input cache stayed locked"
  find "$R" -mindepth 2 -maxdepth 2 -name used -printf '%T@ %h\n' 2>/dev/null | sort -n | while read -r _ e; do
    [ $(($(total) + $1)) -le "$BOUND" ] && break
    [ "$e" = "$E" ] && continue
    [ -z "$(ls -A -- "$e/pins" 2>/dev/null)" ] || continue
    flock -n "$e.lock" rm -rf -- "$e" && echo "EVICTED ${e##*/}"
  done
  fits=$(( $(total) + $1 <= BOUND ))
  exec 8>&-
  [ "$fits" = 1 ]
}
mkdir -p -- "${DEST%/*}" || fail "cannot make the folder of ${DEST##*/}"
[ -n "$K" ] || direct
command -v flock >/dev/null 2>&1 || fail "flock (util-linux) is missing on the machine: install it, or set the environment's input_cache_gb: 0"
mkdir -p -- "$R" && exec 9>"$E.lock" || fail "cannot use the input cache folder $R"
flock -w "$WAIT" 9 || fail "another execution's download of ${DEST##*/} did not end in $WAIT s"
if [ -f "$E/data" ] && [ -f "$E/stamp" ]; then
  if [ "$(stamp "$E/data")" != "$(cat "$E/stamp")" ]; then
    # Changed since it was verified: only its content can say whether it is still sound.
    if [ "$(wc -c < "$E/data")" = "$(cat "$E/size")" ] && [ "$(digest "$E/data")" = "$(cat "$E/sha256")" ]; then
      stamp "$E/data" > "$E/stamp"
    else
      echo CORRUPT; rm -rf -- "$E"
    fi
  fi
  if [ -f "$E/data" ] && [ -n "$SHA" ] && [ "$SHA" != "$(cat "$E/sha256")" ]; then echo CORRUPT; rm -rf -- "$E"; fi
else
  rm -rf -- "$E"  # an entry whose making was cut short
fi
if [ -f "$E/data" ]; then
  echo HIT
else
  if [ -n "$SIZE" ] && { [ "$SIZE" -gt "$BOUND" ] || ! evict "$SIZE"; }; then echo UNCACHED; direct; fi
  echo MISS
  mkdir -p -- "$E" && { [ -z "$SIZE" ] || echo "$SIZE" > "$E/size"; } || fail "cannot write to the input cache"
  trap 'rm -rf -- "$E"' EXIT
  P=$E/data.$$.part  # this run's own: a writer of an earlier run cut short can never touch it
  receive "$P"
  if [ -z "$SIZE" ] && { [ "$got" -gt "$BOUND" ] || ! evict "$got"; }; then
    echo UNCACHED; chmod 644 -- "$P" && mv -f -- "$P" "$DEST" || fail "cannot place ${DEST##*/}"
    rm -rf -- "$E"; trap - EXIT; echo "FILE $got $sum $(total)"; exit 0
  fi
  chmod 444 "$P" && mv -f -- "$P" "$E/data" && echo "$got" > "$E/size" &&
    echo "$sum" > "$E/sha256" && stamp "$E/data" > "$E/stamp" || fail "cannot write to the input cache"
  trap - EXIT
fi
mkdir -p -- "$E/pins" && : > "$E/pins/$PIN" && touch -- "$E/used" || fail "cannot write to the input cache"
if [ "$MODE" = mount ]; then echo "MOUNT $E/data"; else place "$E/data"; fi
echo "FILE $(cat "$E/size") $(cat "$E/sha256") $(total)"
"""

RELEASE_SCRIPT = r"""R=$1 PIN=$2
rm -f -- "$R"/*/pins/"$PIN"
"""


@dataclass(frozen=True)
class Identity:
    """What names one version of an input: its cache key, and its size and sha256 where known."""

    key: str
    size: int | None = None
    sha256: str | None = None


def _key(kind: str, *parts: object) -> str:
    return f"{kind}-" + hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:40]


def identify(uri: str, datum: tuple[int | None, str | None] | None = None,
             datastore_settings: object = None, http: Any = None) -> Identity | None:
    """The cache identity of the file at `uri` (a datum's resolved URI; `datum` its stored size and sha256),
    or None when it has none that can be trusted (then it is fetched every time). Cheap: a stat, a HEAD
    (with `http`, a requests session, when given: a restricted execution's, guarded by the fetch policy)."""
    if datum is not None and datum[1]:
        return Identity(f"sha256-{datum[1]}", datum[0], datum[1])
    scheme = urlparse(uri).scheme
    try:
        if scheme == "file":
            st = file_uri_path(uri).stat()
            return Identity(_key("file", file_uri_path(uri), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev),
                            st.st_size)
        if scheme in ("s3", "gs"):
            from vh_orch.storage.datastores import bucket_datastore

            size, version = bucket_datastore(uri, datastore_settings).stat(uri)  # type: ignore[attr-defined]
            return Identity(_key(scheme, uri, version, size), size)
        if scheme in ("http", "https"):
            resp = (http or requests).head(uri, allow_redirects=True, timeout=HEAD_TIMEOUT)
            if resp.status_code >= 400:
                return None
            validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            length = resp.headers.get("Content-Length")
            if not validator or resp.headers.get("Content-Encoding"):
                return None
            return Identity(_key("http", uri, validator, length), int(length) if length and length.isdigit() else None)
    except Exception as exc:  # the fetch itself says what is wrong
        log.debug("no cache identity for %s: %s", uri, exc)
    return None


# -- running the script: over SSH, or here -------------------------------------------


class Command(Protocol):
    def readline(self) -> bytes: ...
    def send(self, data: bytes) -> None: ...
    def end_input(self) -> None: ...
    def abort(self) -> None: ...
    def finish(self, timeout: float) -> tuple[int, str]:
        """Its exit status (-1: the connection broke) and the last line of its stderr."""
        ...


class Bulk(Protocol):
    """A path of its own for a large file's bytes (an SSH host's: the OpenSSH client, bootstrap/openssh.py)."""

    min_bytes: int  # smaller files go through the cache script's own stdin: the path's setup costs more

    def send(self, script: str, args: list[str], chunks: Outgoing) -> bool:
        """Run `sh -c SCRIPT sh ARGS...` on the machine with chunks on its stdin and wait for its end: True
        once it ended well; False if this path cannot be used at all (nothing of chunks was consumed: the
        caller sends them another way). Raises InputCacheError if it failed, and the transport's own error
        (an SSH host's HostKeyMismatch) if the host is not the one pinned."""
        ...


class Shell(Protocol):
    """Where the cache lives: runs `sh -c SCRIPT sh ARGS...` there; bulk: a faster path for large files, if any."""

    bulk: Bulk | None

    def start(self, script: str, args: list[str]) -> Command: ...


class LocalShell:
    """The daemon's own host (the local runtimes)."""

    bulk = None

    def start(self, script: str, args: list[str]) -> Command:
        return _LocalCommand(subprocess.Popen(["sh", "-c", script, "sh", *args], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE))


class _LocalCommand:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def readline(self) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    def end_input(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def abort(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def finish(self, timeout: float) -> tuple[int, str]:
        self.end_input()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.read()
        err = self.proc.stderr.read().decode("utf-8", "replace")
        code = self.proc.wait(timeout)
        return code, (err.strip().splitlines() or [""])[-1]


# -- the daemon's side ------------------------------------------------------------------


class InputCacheError(Exception):
    """Placing an input failed; the message says why (the machine's own words where it said any)."""


class _SourceFailed(Exception):
    pass


@dataclass
class Placed:
    size: int
    sha256: str
    hit: bool  # it was in the cache: no byte of it moved
    sent: int  # bytes the daemon sent to the machine for it
    cache_bytes: int  # the cache's size after placing it
    events: tuple[str, ...] = ()  # CORRUPT, EVICTED <key>, UNCACHED: what happened on the way
    mount: str | None = None  # the cache entry's file, to mount read-only in the container (place(mount=True))


class InputCache:
    """The input cache of one machine (root: its folder there; bound_bytes: its size limit; 0: no caching)."""

    def __init__(self, shell: Shell, root: str, bound_bytes: int, pin: str, wait_s: float = LOCK_WAIT_S) -> None:
        self.shell = shell
        self.root = root.rstrip("/")
        self.bound_bytes = bound_bytes
        self.pin = pin
        self.wait_s = wait_s

    def place(self, identity: Identity | None, dest: str, url: str | None,
              source: Callable[[], tuple[int, Iterator[bytes]]], mount: bool = False) -> Placed:
        """Put one input file at dest (an absolute path on the machine): from the cache, from the signed
        url (the machine downloads it), or, when it is not cached, from source() (its size and bytes,
        which the daemon sends). mount: a cached file is not copied; Placed.mount names the entry's
        file, for the container to mount read-only at dest's place (a file that could not be cached
        is at dest, as always)."""
        key = identity.key if identity is not None and self.bound_bytes > 0 else ""
        args = [self.root, key, _opt(identity and identity.size), (identity and identity.sha256) or "", dest,
                url or "", self.pin, str(self.bound_bytes), str(int(self.wait_s)), "mount" if mount else "copy"]
        command = self.shell.start(CACHE_SCRIPT, args)
        events: list[str] = []
        sent = 0
        hit = False
        mounted: str | None = None
        try:
            while True:
                line = command.readline().decode("utf-8", "replace").strip()
                if not line:
                    code, said = command.finish(60)
                    raise InputCacheError(said or f"the cache script ended with status {code}")
                if line.startswith("SEND "):
                    sent = self._send(command, source, line[len("SEND "):])
                elif line == "HIT":
                    hit = True
                    failpoints.hit("input-transfer")  # the machine copies it from its cache
                elif line.startswith("MOUNT "):
                    mounted = line[len("MOUNT "):]
                elif line.startswith("FILE "):
                    _, size, digest, total = line.split()
                    command.finish(60)
                    return Placed(int(size), digest, hit, sent, int(total), tuple(events), mounted)
                else:
                    events.append(line)
        except (OSError, EOFError) as exc:
            code, said = command.finish(60)
            raise InputCacheError(said or f"the connection broke while placing the input: {exc}") from None

    def _send(self, command: Command, source: Callable[[], tuple[int, Iterator[bytes]]], path: str) -> int:
        """Send the source's size, then its bytes into path on the machine: a large file over the shell's
        bulk path where it has one, else on the script's stdin. A source that fails aborts the command, so
        the machine throws away what it got (never a partial entry). Returns the bytes sent."""
        outgoing: Outgoing | None = None
        try:
            size, chunks = source()
            outgoing = Outgoing(chunks, size)
            bulk = self.shell.bulk
            if bulk is not None and size >= bulk.min_bytes and bulk.send(TAKE_SCRIPT, [path, str(size)], outgoing):
                command.send(f"{size} SENT\n".encode())
                return size
            command.send(f"{size}\n".encode())
            for chunk in outgoing:
                command.send(chunk)
        except BaseException as exc:
            command.abort()
            if isinstance(exc, _SourceFailed):
                raise InputCacheError(str(exc)) from None
            raise
        finally:
            if outgoing is not None:
                outgoing.close()
        command.end_input()
        return outgoing.sent

    def release(self) -> None:
        """This execution no longer uses its entries: they may be evicted."""
        code, said = self.shell.start(RELEASE_SCRIPT, [self.root, self.pin]).finish(120)
        if code != 0:
            log.warning("releasing input cache entries under %s failed: %s", self.root, said)


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


class Outgoing(Iterator[bytes]):
    """A source's bytes on their way to the machine. A failure to read them is _SourceFailed (the input's
    fault, not the machine's); the `input-transfer` failpoint is hit once half of them have gone. `file`:
    the open local file behind them, if any (FileChunks), for a path that hands it over whole
    (handed_over() then stands for the failpoint)."""

    def __init__(self, chunks: Iterator[bytes], size: int) -> None:
        self.chunks, self.size, self.sent = chunks, size, 0
        self.file: BinaryIO | None = chunks.file if isinstance(chunks, FileChunks) else None

    def __next__(self) -> bytes:
        try:
            chunk = next(self.chunks)
        except OSError as exc:
            raise _SourceFailed(f"cannot read the input: {exc}") from None
        if self.sent < self.size // 2 <= self.sent + len(chunk):
            failpoints.hit("input-transfer")
        self.sent += len(chunk)
        return chunk

    def handed_over(self) -> None:
        """The file is being sent by another process."""
        failpoints.hit("input-transfer")

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


class FileChunks(Iterator[bytes]):
    """A local file's bytes in CHUNK pieces (remove: delete the file once closed, a temporary download).
    `file` is the open file itself, for a sender that hands it on whole (the OpenSSH client reads it
    as its stdin: no byte passes through the daemon)."""

    def __init__(self, path: Path, remove: bool = False) -> None:
        self.path, self.remove = path, remove
        self.file: BinaryIO = open(path, "rb")

    def __next__(self) -> bytes:
        chunk = self.file.read(CHUNK)
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
            if self.remove:
                self.path.unlink(missing_ok=True)


def file_source(path: Path, remove: bool = False) -> tuple[int, Iterator[bytes]]:
    """A local file as a source for InputCache.place (remove: delete it once sent, a temporary download)."""
    chunks = FileChunks(path, remove)
    return os.fstat(chunks.file.fileno()).st_size, chunks


def pin_name(cluster_id: str, execution_id: int, attempt: int) -> str:
    return f"{cluster_id}-{execution_id}-{attempt}"


def cache_bound_bytes(gb: float) -> int:
    """An input cache's bound (an environment's `input_cache_gb`) in bytes."""
    return int(gb * GiB)


def quote_args(script: str, args: list[str]) -> str:
    """`sh -c SCRIPT sh ARGS...` as one command line for a remote shell, every value quoted."""
    return " ".join(shlex.quote(a) for a in ["sh", "-c", script, "sh", *args])

