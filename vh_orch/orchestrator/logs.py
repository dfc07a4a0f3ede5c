"""Log and metadata ingestion: bytes from a running command become stored lines, in batches.

- A line longer than MAX_LINE_BYTES is split into pieces of at most that many bytes;
  nothing is dropped. A multi-byte character is never cut in two.
- Bytes that are not UTF-8 are replaced with U+FFFD, never fatal.
- A stdout line that parses as a JSON object is also a metadata point; other JSON
  (lists, numbers), NaN/Infinity and malformed lines are ordinary log lines.

Speed: a reader thread takes what the pipe holds in one read, decodes and splits it at once
and hands the lines on as one chunk with one time (the moment it was read; or each line's
docker stamp, left in the text for the store to cut off). Only a read holding an over-long
line, or a candidate metadata line, is looked at line by line. The writer stores chunks with
one statement each (see store/logs.py).
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any

from vh_orch import failpoints
from vh_orch.errors import LeaseLost
from vh_orch.orchestrator.masking import StreamMask, mask_text, masked_forms, masked_value
from vh_orch.orchestrator.metadata_limits import DEFAULT_MAX_KEYS, MetadataGate, warning
from vh_orch.orchestrator.metrics import DaemonMetrics
from vh_orch.orchestrator.store import LogChunk, Store
from vh_orch.orchestrator.store.logs import STAMP_WIDTH, has_stamp
from vh_orch.orchestrator.workers import LOG_WORKERS, Job

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
READ_BYTES = 1 << 20  # at most this much a read: what the pipe holds (64 KiB by default)
BATCH_LINES = 10_000  # lines a transaction, at most
FLUSH_INTERVAL_S = 0.1
# Lines read but not yet stored, at most: past this the readers wait for the writer (a busy or
# unreachable database), so the command's own pipe fills and it waits too; nothing is dropped.
MAX_PENDING = 50_000
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: no JSON value, and no database would take it back
        raise ValueError(f"{text} is too large a number")
    return value


def parse_metadata(text: str) -> dict[str, Any] | None:
    """The metadata point in a stdout line, or None when the line is not a JSON object."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        value = json.loads(stripped, parse_constant=_reject_constant, parse_float=_finite)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class LineSplitter:
    """Bytes in, lines out (without their newline, a CR before it dropped).

    A line longer than max_bytes is cut into pieces of at most max_bytes bytes, as
    `readline(max_bytes)` cuts it; a piece never ends inside a character (the bytes of an
    unfinished one start the next piece). Bad UTF-8 becomes U+FFFD. The cuts depend only on
    the bytes, never on how they were split into reads.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = b""  # the unfinished last line
        self._cut = False  # the pending bytes continue a line whose first piece was passed on
        self.continued: list[int] = []  # in the last answer: which lines continue the one before

    def feed(self, data: bytes) -> list[str]:
        buf = self._pending + data if self._pending else data
        self.continued = []
        lines: list[str] = []
        if not self._cut:
            end = buf.rfind(b"\n") + 1
            if end:
                # Decoding the whole read at once gives what line-by-line decoding gives: a newline
                # is never part of a character, so it always ends a bad sequence.
                text = buf[:end].decode("utf-8", "replace")
                if "\r" in text:
                    text = text.replace("\r\n", "\n")
                whole = text.split("\n")
                whole.pop()  # after the last newline
                # A character is at most 4 bytes (a replaced bad sequence at most 3).
                if end <= self.max_bytes or max(map(len, whole)) * 4 < self.max_bytes:
                    lines = whole
                    buf = buf[end:]
        if len(buf) >= self.max_bytes or self._cut or b"\n" in buf:
            lines += self._one_by_one(buf)
        else:
            self._pending = buf
        return lines

    def end(self) -> list[str]:
        """The unfinished last line, if any (the stream ended without a newline)."""
        lines = []
        self.continued = []
        if self._pending:
            text = self._decoder.decode(self._pending, final=False)
            if text:
                self._piece(lines, text)
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._piece(lines, tail)
        self._pending = b""
        return lines

    def _piece(self, lines: list[str], text: str) -> None:
        if self._cut:
            self.continued.append(len(lines))
        lines.append(text)
        self._cut = True

    def _one_by_one(self, buf: bytes) -> list[str]:
        lines: list[str] = []
        decode = self._decoder.decode
        pos, size, limit = 0, len(buf), self.max_bytes
        while True:
            newline = buf.find(b"\n", pos, pos + limit)
            if newline >= 0:
                text = decode(buf[pos:newline], final=True)
                if self._cut:
                    self.continued.append(len(lines))
                lines.append(text[:-1] if text.endswith("\r") else text)
                self._cut = False
                pos = newline + 1
            elif size - pos >= limit:
                # A piece of an over-long line: the decoder keeps an unfinished character for the next.
                text = decode(buf[pos:pos + limit], final=False)
                if text:
                    self._piece(lines, text)
                else:
                    self._cut = True
                pos += limit
            else:
                break
        self._pending = buf[pos:]
        return lines


def iter_lines(stream: IO[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterable[str]:
    """Decoded lines (without the newline) from a binary stream, long lines split."""
    splitter = LineSplitter(max_bytes)
    read = getattr(stream, "read1", stream.read)
    while data := read(READ_BYTES):
        yield from splitter.feed(data)
    yield from splitter.end()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class LogIngester:
    """Collects lines from several reader threads and stores them in batches.

    One writer thread per execution; `close()` flushes everything and waits. A batch the
    database refuses is retried with back-off until it is stored, never dropped; while it
    waits, readers stop reading (the backlog is bounded by MAX_PENDING).
    """

    def __init__(self, store: Store, execution_id: int, metrics: DaemonMetrics | None = None,
                 on_metadata: Callable[[dict[str, Any]], None] | None = None,
                 max_metadata_keys: int = DEFAULT_MAX_KEYS, secrets: Iterable[str] = (),
                 known_keys: Iterable[str] | None = None) -> None:
        self.store = store
        # The project's secret values: masked (`***`) in every line before it is stored, and in every
        # metadata point and output's metadata (masking.py).
        self._masked = masked_forms(secrets)
        # Called in a reader thread with each metadata point as it is read (stop conditions).
        self.on_metadata = on_metadata
        self.execution_id = execution_id
        # The keys it has (known_keys: the caller's fresh row has them; else read once, as after a restart),
        # and what of each new point is metadata.
        self.gate = MetadataGate(store.metadata_keys(execution_id) if known_keys is None else known_keys,
                                 max_metadata_keys)
        self.metrics = metrics
        self._queue: queue.SimpleQueue[LogChunk | None] = queue.SimpleQueue()
        self._writer = LOG_WORKERS.submit(self._write_loop, f"log-writer-{execution_id}")
        self._readers: list[Job] = []
        self._unstored = 0  # lines in the queue or in the batch being written
        self._count_lock = threading.Lock()
        self._room = threading.Event()
        self._room.set()
        self.lines_stored = 0
        # When the command last wrote anything (time.monotonic(); None: not yet), on either stream:
        # what no-output-timeout measures. Lines of vh-orch's own (add()) do not count.
        self.last_output: float | None = None
        self.lost = False  # the execution's lease went to another replica: nothing more is stored

    @property
    def masked_forms(self) -> list[bytes]:
        """The secret values' forms this execution masks (for its output metadata too)."""
        return self._masked

    def follow(self, stream: IO[bytes], name: str, timestamped: bool = False, skip: int = 0) -> None:
        """Read a stream to its end on a thread of its own (a log worker's).

        timestamped: each line starts with its time in docker's fixed-width stamp, which becomes
        the line's time. skip: drop the first `skip` lines (as split and masked here, so the same
        bytes always give the same lines): those a re-attached stream brings again.
        """
        self._readers.append(LOG_WORKERS.submit(lambda: self._read_loop(stream, name, timestamped, skip),
                                                f"log-{name}-{self.execution_id}"))

    def add(self, stream: str, text: str) -> None:
        """A line that did not come from the command (e.g. a note from vh-orch itself)."""
        self._queued(1)
        self._queue.put(LogChunk(stream, [mask_text(text, self._masked)], _now()))

    def _queued(self, n: int) -> None:
        with self._count_lock:
            self._unstored += n
            if self._unstored >= MAX_PENDING:
                self._room.clear()
            elif self._unstored < MAX_PENDING // 2:
                self._room.set()

    def _read_loop(self, stream: IO[bytes], name: str, timestamped: bool = False, skip: int = 0) -> None:
        read = getattr(stream, "read1", stream.read)
        splitter = LineSplitter()
        mask = StreamMask(self._masked)
        stamp = ""  # the last docker stamp read: the pieces of a cut line take it
        try:
            while True:
                data = read(READ_BYTES)
                if data:
                    self.last_output = time.monotonic()
                    lines = splitter.feed(mask.feed(data))
                else:
                    lines = _last_lines(splitter, mask.end())
                if lines and timestamped:
                    stamp = _stamp_pieces(lines, splitter.continued, stamp)
                if lines and skip:
                    dropped = min(skip, len(lines))
                    skip -= dropped
                    del lines[:dropped]
                if lines:
                    points, broken = self._metadata(name, lines, timestamped)
                    self._put(LogChunk(name, lines, _now(), timestamped, points))
                    for rule in broken:
                        self._warn_once(rule)
                if not data:
                    break
        except (OSError, ValueError) as exc:  # the pipe went away under us
            log.warning("execution %s: reading %s stopped: %s", self.execution_id, name, exc)

    def _put(self, chunk: LogChunk) -> None:
        self._queued(len(chunk.texts))
        self._queue.put(chunk)
        if chunk.metadata and self.on_metadata is not None:
            for point in chunk.metadata.values():
                try:
                    self.on_metadata(point)
                except Exception:
                    log.exception("execution %s: checking a metadata point failed", self.execution_id)
        self._room.wait()  # the writer is behind: stop reading until it catches up

    def _metadata(self, name: str, lines: list[str], stamped: bool) -> tuple[dict[int, dict[str, Any]] | None,
                                                                        list[str]]:
        """The metadata points among a chunk's lines: stdout lines that start (after a docker stamp)
        with "{" or blanks, as far as they are metadata (MetadataGate); and the gate's rules these
        points broke for the first time. One look at the joined text rules most chunks out."""
        if name != "stdout":
            return None, []
        joined = "\n" + "\n".join(lines)
        marks = ("Z {", "Z  ", "Z \t") if stamped else ("\n{", "\n ", "\n\t")
        if not any(mark in joined for mark in marks):
            return None, []
        points = {}
        broken: list[str] = []
        for i, raw in enumerate(lines):
            text = raw[STAMP_WIDTH:] if stamped and has_stamp(raw) else raw
            if text[:1] in "{ \t" and text:
                point = parse_metadata(text)
                if point is not None and self._masked:
                    # The line's bytes were masked; a value written with \u escapes shows once parsed:
                    # then the line is stored as the masked point's JSON.
                    masked = masked_value(point, self._masked)
                    if masked != point:
                        point = masked
                        lines[i] = raw[:len(raw) - len(text)] + json.dumps(masked, ensure_ascii=False)
                if point is not None:
                    kept, rules = self.gate.admit(point, len(text))
                    broken += rules
                    if kept is not None:
                        points[i] = kept
        return points or None, broken

    def _warn_once(self, rule: str) -> None:
        """One warning line per execution for each rule that keeps something out of its metadata
        (a daemon that re-attached looks for the line its predecessor wrote)."""
        text = warning(rule, self.gate.max_keys)
        try:
            if self.store.log_has_line(self.execution_id, "stderr", text):
                return
        except Exception:  # the database is busy: better a second warning than none
            log.warning("execution %s: could not look for an earlier metadata warning", self.execution_id)
        self.add("stderr", text)

    def let_go(self) -> None:
        """Store nothing more (its command is followed on elsewhere, or later, from what is stored):
        a stream cut now would end in a piece of a line that its next follower reads whole."""
        self.lost = True

    def wait_readers(self, timeout: float | None = None) -> bool:
        """Wait for every stream to reach its end; False if one has not within timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._readers:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._readers)

    def close(self, timeout: float | None = None) -> bool:
        """Wait for the readers, then for every line read to be stored. True when it all was:
        every stream read to its end and every line in the database."""
        read_all = self.wait_readers(timeout)
        self._queue.put(None)
        self._writer.join(timeout)
        return read_all and not self._writer.is_alive() and self._unstored == 0

    def _write_loop(self) -> None:
        get = self._queue.get
        done = False
        while not done:
            first = get()
            if first is None:
                break
            batch = [first]
            count = len(first.texts)
            deadline = time.monotonic() + FLUSH_INTERVAL_S
            while count < BATCH_LINES:
                remaining = deadline - time.monotonic()
                try:
                    item = get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
                count += len(item.texts)
            self._store(batch, count)

    def _store(self, batch: list[LogChunk], count: int) -> None:
        attempt = 0
        while True:
            if self.lost:  # another replica follows this execution now: its lines are its own
                self._queued(-count)
                return
            try:
                self.store.append_chunks(self.execution_id, batch)
                break
            except LeaseLost as exc:
                log.warning("execution %s: %d log lines not stored: %s", self.execution_id, count, exc)
                self.lost = True
            except Exception as exc:  # database busy or gone: wait and retry; lines are never dropped
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                if attempt in (1, 10) or attempt % 60 == 0:
                    log.warning("execution %s: storing %d log lines failed (%s); retrying in %s s",
                                self.execution_id, count, exc, delay)
                time.sleep(delay)
        self.lines_stored += count
        if self.metrics is not None:
            self.metrics.log_lines.inc(count)
        self._queued(-count)
        failpoints.hit("log-follow")


def _last_lines(splitter: LineSplitter, held: bytes) -> list[str]:
    """At a stream's end: the lines of the bytes the mask held back, then the splitter's unfinished
    last line (`continued` told for both, as one answer)."""
    first = splitter.feed(held) if held else []
    continued = list(splitter.continued) if held else []
    rest = splitter.end()
    splitter.continued = continued + [len(first) + i for i in splitter.continued]
    return first + rest


def _stamp_pieces(lines: list[str], continued: list[int], stamp: str) -> str:
    """Give the later pieces of a cut line the docker stamp of its first; the last stamp seen."""
    if continued:
        for i, raw in enumerate(lines):
            if i in continued:
                lines[i] = stamp + raw
            elif has_stamp(raw):
                stamp = raw[:STAMP_WIDTH]
        return stamp
    last = lines[-1]
    return last[:STAMP_WIDTH] if has_stamp(last) else stamp
