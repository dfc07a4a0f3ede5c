"""Log and metadata ingestion: bytes from a running command become stored lines, in batches.

- A line longer than MAX_LINE_BYTES is split into pieces of at most that many bytes;
  nothing is dropped. A multi-byte character is never cut in two.
- Bytes that are not UTF-8 are replaced with U+FFFD, never fatal.
- A stdout line that parses as a JSON object is also a metadata point; other JSON
  (lists, numbers), NaN/Infinity and malformed lines are ordinary log lines.
"""

from __future__ import annotations

import codecs
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any

from vh_orch import failpoints
from vh_orch.errors import LeaseLost
from vh_orch.orchestrator.metrics import DaemonMetrics
from vh_orch.orchestrator.store import LogLine, Store
from vh_orch.timeutil import parse_docker_time

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
BATCH_LINES = 5_000
FLUSH_INTERVAL_S = 0.1
# Lines read but not yet stored, at most: past this the readers wait for the writer (a busy or
# unreachable database), so the command's own pipe fills and it waits too; nothing is dropped.
MAX_PENDING = 50_000
CHECK_EVERY = 1_024  # lines between two looks at the backlog (a look per line would cost)
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_metadata(text: str) -> dict[str, Any] | None:
    """The metadata point in a stdout line, or None when the line is not a JSON object."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        value = json.loads(stripped, parse_constant=_reject_constant)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def iter_lines(stream: IO[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterable[str]:
    """Decoded lines (without the newline) from a binary stream, long lines split."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    readline = stream.readline
    while True:
        chunk = readline(max_bytes)
        if not chunk:
            break
        if chunk.endswith(b"\n"):
            text = decoder.decode(chunk[:-1], final=True)
            yield text[:-1] if text.endswith("\r") else text
        else:
            # A piece of an over-long line: the decoder keeps an incomplete trailing
            # character for the next piece; the rest is a line of its own.
            text = decoder.decode(chunk, final=False)
            if text:
                yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


class LogIngester:
    """Collects lines from several reader threads and stores them in batches.

    One writer thread per execution; `close()` flushes everything and waits. A batch the
    database refuses is retried with back-off until it is stored, never dropped; while it
    waits, readers stop reading (the backlog is bounded by MAX_PENDING).
    """

    def __init__(self, store: Store, execution_id: int, metrics: DaemonMetrics | None = None,
                 on_metadata: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        # Called in a reader thread with each metadata point as it is read (stop conditions).
        self.on_metadata = on_metadata
        self.execution_id = execution_id
        self.metrics = metrics
        self._queue: queue.SimpleQueue[LogLine | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name=f"log-writer-{execution_id}", daemon=True)
        self._writer.start()
        self._readers: list[threading.Thread] = []
        self._unstored = 0  # lines in the queue or in the batch being written
        self._count_lock = threading.Lock()
        self._room = threading.Event()
        self._room.set()
        self.lines_stored = 0
        self.lost = False  # the execution's lease went to another replica: nothing more is stored

    def follow(self, stream: IO[bytes], name: str, timestamped: bool = False) -> None:
        """Read a stream to its end in a thread of its own.

        timestamped: each line starts with the time Docker recorded it (`docker logs
        --timestamps`), which becomes the line's time.
        """
        thread = threading.Thread(
            target=self._read_loop, args=(stream, name, timestamped), name=f"log-{name}-{self.execution_id}",
            daemon=True,
        )
        thread.start()
        self._readers.append(thread)

    def add(self, stream: str, text: str) -> None:
        """A line that did not come from the command (e.g. a note from vh-orch itself)."""
        self._queued(1)
        self._queue.put(LogLine(datetime.now(UTC), stream, text))

    def _queued(self, n: int) -> None:
        with self._count_lock:
            self._unstored += n
            if self._unstored >= MAX_PENDING:
                self._room.clear()
            elif self._unstored < MAX_PENDING // 2:
                self._room.set()

    def _read_loop(self, stream: IO[bytes], name: str, timestamped: bool = False) -> None:
        queue_put = self._queue.put
        is_stdout = name == "stdout"
        since_check = 0

        on_metadata = self.on_metadata

        def put(line: LogLine) -> None:
            nonlocal since_check
            queue_put(line)
            if line.metadata is not None and on_metadata is not None:
                try:
                    on_metadata(line.metadata)
                except Exception:
                    log.exception("execution %s: checking a metadata point failed", self.execution_id)
            since_check += 1
            if since_check >= CHECK_EVERY:
                self._queued(since_check)
                since_check = 0
                self._room.wait()  # the writer is behind: stop reading until it catches up

        try:
            for text in iter_lines(stream):
                if timestamped:
                    stamp, _, text = text.partition(" ")
                    metadata = parse_metadata(text) if is_stdout and text[:1] in "{ \t" and text else None
                    if len(stamp) == 30 and stamp[10] == "T":
                        # Docker's fixed-width stamp already holds the stored form: no parsing per line.
                        put(LogLine(None, name, text, metadata, f"{stamp[:10]} {stamp[11:26]}"))
                        continue
                    try:
                        when = parse_docker_time(stamp)
                    except ValueError:
                        when = datetime.now(UTC)
                else:
                    when = datetime.now(UTC)
                    metadata = parse_metadata(text) if is_stdout and text[:1] in "{ \t" and text else None
                put(LogLine(when, name, text, metadata))
        except (OSError, ValueError) as exc:  # the pipe went away under us
            log.warning("execution %s: reading %s stopped: %s", self.execution_id, name, exc)
        finally:
            self._queued(since_check)

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
            deadline = time.monotonic() + FLUSH_INTERVAL_S
            while len(batch) < BATCH_LINES:
                remaining = deadline - time.monotonic()
                try:
                    item = get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            self._store(batch)

    def _store(self, batch: list[LogLine]) -> None:
        attempt = 0
        while True:
            if self.lost:  # another replica follows this execution now: its lines are its own
                self._queued(-len(batch))
                return
            try:
                self.store.append_log(self.execution_id, batch)
                break
            except LeaseLost as exc:
                log.warning("execution %s: %d log lines not stored: %s", self.execution_id, len(batch), exc)
                self.lost = True
            except Exception as exc:  # database busy or gone: wait and retry; lines are never dropped
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                if attempt in (1, 10) or attempt % 60 == 0:
                    log.warning("execution %s: storing %d log lines failed (%s); retrying in %s s",
                                self.execution_id, len(batch), exc, delay)
                time.sleep(delay)
        self.lines_stored += len(batch)
        if self.metrics is not None:
            self.metrics.log_lines.inc(len(batch))
        self._queued(-len(batch))
        failpoints.hit("log-follow")


