"""Log lines and metadata points, numbered in order with the status changes (one seq each).

The ingester hands over chunks (the lines of one read of one stream); the consecutive chunks
of one stream in a batch are one `log_block` row (up to BLOCK_BYTES), their lines joined by
newlines, docker's stamps left on the lines they start and the read time of each chunk kept:
writing a million lines is a few hundred rows, and the per-line work (splitting, cutting
stamps) is done by readers, for the lines they read. Status changes are
`execution_event` rows, as were log lines before blocks; readers merge both by seq.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any, Generic, TypeVar

from sqlalchemy import func, insert, update
from sqlmodel import col, select

from vh_orch.orchestrator.models import Execution, ExecutionEvent, LogBlock, MetadataPoint
from vh_orch.orchestrator.store.database import Database
from vh_orch.orchestrator.store.latest import latest_merged
from vh_orch.timeutil import iso

T = TypeVar("T")

# `docker logs --timestamps` starts each line with a fixed-width RFC 3339 time and a space:
# "2026-11-26T08:13:52.123456789Z text". STAMP_WIDTH characters up to the text.
STAMP_WIDTH = 31


@dataclass(slots=True)
class LogLine:
    time: datetime | None  # None only when sql_time is given
    stream: str  # "stdout" or "stderr"
    text: str
    metadata: dict[str, Any] | None = None  # set when the line is a metadata point
    # The time as SQLite stores it ("YYYY-MM-DD HH:MM:SS.ffffff", UTC), when the source already has it.
    sql_time: str | None = None

    def when(self) -> datetime:
        if self.time is None:
            self.time = datetime.fromisoformat(f"{self.sql_time}+00:00")
        return self.time


@dataclass(slots=True)
class LogChunk:
    """Consecutive lines of one stream, read together.

    stamped: each text starts with docker's stamp (see STAMP_WIDTH), which is the line's time
    and not part of its text; a text without one is stored whole at `time`. Otherwise every
    line's time is `time`, the moment the chunk was read.
    """

    stream: str
    texts: list[str]
    time: str  # "YYYY-MM-DD HH:MM:SS.ffffff" (UTC), the form SQLite stores
    stamped: bool = False
    metadata: dict[int, dict[str, Any]] | None = None  # index in texts -> the line's metadata point

    def line(self, i: int) -> tuple[str, str]:
        """The stored time and text of line i."""
        raw = self.texts[i]
        return (self.stamped and cut_stamp(raw)) or (self.time, raw)


def has_stamp(raw: str) -> bool:
    return raw[10:11] == "T" and raw[29:31] == "Z "


def cut_stamp(raw: str) -> tuple[str, str] | None:
    """A stamped line's time (in the form SQLite stores, microseconds) and text; None without a stamp."""
    return (f"{raw[:10]} {raw[11:26]}", raw[STAMP_WIDTH:]) if has_stamp(raw) else None


def sql_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores for a datetime, in UTC (so reads parse it back)."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _as_datetime(stored: str) -> datetime:
    return datetime.fromisoformat(f"{stored}+00:00")


@dataclass(slots=True)
class Event:
    """A log line (kind "log", stream stdout/stderr) or a status change (kind "status"), as read."""

    execution_id: int
    seq: int
    time: datetime
    kind: str
    stream: str | None
    text: str

    @classmethod
    def of_row(cls, row: ExecutionEvent) -> Event:
        return cls(row.execution_id, row.seq, row.time, row.kind, row.stream, row.text)


def block_texts(block: LogBlock) -> list[str]:
    """A block's raw lines (docker stamps still on): a one-line block holds its text whole."""
    return [block.texts] if block.first_seq == block.last_seq else block.texts.split("\n")


def block_text(block: LogBlock, after: int = 0) -> str:
    """The text of a block's lines with seq > `after`, docker's stamps cut, each line ending in a
    newline: a megabyte at a time for whoever writes a whole log out, with no object per line."""
    skip = max(0, after + 1 - block.first_seq)
    if not block.stamped and not skip:
        return block.texts + "\n"
    raws = block_texts(block)[skip:]
    if block.stamped:
        raws = [raw[STAMP_WIDTH:] if has_stamp(raw) else raw for raw in raws]
    return "\n".join(raws) + "\n" if raws else ""


def block_rows(block: LogBlock, after: int = 0) -> list[tuple[int, str, str]]:
    """The lines of a block with seq > `after` as (seq, time as timeutil.iso spells it, text), with
    no datetime per line: a stamp's first 26 characters are its time to the microsecond."""
    return _rows(block, block_texts(block), max(0, after + 1 - block.first_seq), None)


def _rows(block: LogBlock, raws: list[str], lo: int, hi: int | None) -> list[tuple[int, str, str]]:
    """block_rows of the block's lines lo to hi (None: its last). The block's fields are read once (each
    read of a mapped attribute costs as much as the rest of a line's work)."""
    first, stamped = block.first_seq, block.stamped
    read_at = _read_times(block)
    read_iso: dict[datetime, str] = {}
    rows = []
    for i in range(lo, len(raws) if hi is None else hi):
        raw = raws[i]
        if stamped and raw[10:11] == "T" and raw[29:31] == "Z ":  # has_stamp, inline
            rows.append((first + i, raw[:26] + "Z", raw[STAMP_WIDTH:]))
            continue
        when = read_at(i)
        spelt = read_iso.get(when)
        if spelt is None:
            spelt = read_iso[when] = iso(when) or ""
        rows.append((first + i, spelt, raw))
    return rows


# An event as the API shows it, with no object per line: (seq, time as timeutil.iso spells it,
# "stdout", "stderr" or "status", text).
EventRow = tuple[int, str, str, str]


def event_row(event: Event) -> EventRow:
    stream = event.stream if event.kind == "log" and event.stream else "status"
    return event.seq, iso(event.time) or "", stream, event.text


def block_event_rows(block: LogBlock, after: int | None = None, before: int | None = None,
                     limit: int | None = None) -> list[EventRow]:
    """block_events as EventRows: a page of thousands of lines with no datetime or object per line."""
    texts = block_texts(block)
    stream = block.stream
    return [(seq, time, stream, text) for seq, time, text in _rows(block, texts, *_span(block, len(texts), after,
                                                                                          before, limit))]


def _span(block: LogBlock, lines: int, after: int | None, before: int | None, limit: int | None) -> tuple[int, int]:
    """The indices (lo, hi) of a block's lines with after < seq < before: the first `limit` of them,
    or the last `limit` when only `before` is given."""
    first = block.first_seq
    lo = 0 if after is None else max(0, after + 1 - first)
    hi = lines if before is None else min(lines, before - first)
    if limit is not None and after is None:
        lo = max(lo, hi - limit)
    elif limit is not None:
        hi = min(hi, lo + limit)
    return lo, hi


def _line(stamped: bool, raw: str) -> tuple[datetime | None, str]:
    """A raw line's time and text; no time (None) when it has no stamp: then it is when it was read."""
    if stamped and has_stamp(raw):
        try:
            return datetime.fromisoformat(raw[:26] + "+00:00"), raw[STAMP_WIDTH:]
        except ValueError:  # not a stamp after all: the line is text
            pass
    return None, raw


def _read_times(block: LogBlock) -> Callable[[int], datetime]:
    """When the block's line i was read: `time`, or a later chunk's time from its `times`."""
    if not block.times:
        return lambda _i: block.time
    starts = [0, *(int(index) for index, _ in block.times)]
    times = [block.time, *(_as_datetime(str(when)) for _, when in block.times)]
    return lambda i: times[bisect_right(starts, i) - 1]


def block_events(block: LogBlock, after: int | None = None, before: int | None = None,
                 limit: int | None = None) -> list[Event]:
    """The lines of a block with after < seq < before, as events: the first `limit` of them,
    or the last `limit` when only `before` is given."""
    texts = block_texts(block)
    lo, hi = _span(block, len(texts), after, before, limit)
    # A page is thousands of lines: the block's fields are read once.
    events: list[Event] = []
    first, execution_id, stream, stamped = block.first_seq, block.execution_id, block.stream, block.stamped
    read_at = _read_times(block)
    for i in range(lo, hi):
        when, text = _line(stamped, texts[i])
        events.append(Event(execution_id, first + i, when or read_at(i), "log", stream, text))
    return events


def _merged(rows: Iterable[ExecutionEvent], blocks: Iterable[LogBlock], after: int | None,
            before: int | None, limit: int, form: _Form[T]) -> list[T]:
    events = [form.of_event(Event.of_row(row)) for row in rows]
    for block in blocks:
        events += form.of_block(block, after, before, limit)
    events.sort(key=form.seq)
    return events


@dataclass(frozen=True, slots=True)
class _Form(Generic[T]):
    """What a page of events is made of: Events, or EventRows."""

    of_event: Callable[[Event], T]
    of_block: Callable[[LogBlock, int | None, int | None, int | None], list[T]]
    seq: Callable[[T], int]


EVENTS: _Form[Event] = _Form(lambda event: event, block_events, attrgetter("seq"))
EVENT_ROWS: _Form[EventRow] = _Form(event_row, block_event_rows, itemgetter(0))


BLOCK_BYTES = 1 << 20  # a block takes chunks until its text would pass this
BLOCKS_PER_READ = 8  # blocks a reader of a whole log takes at a time: up to 8 MB of text
ROWS_PER_READ = 1000


@dataclass(slots=True)
class _Block:
    """A block being filled: consecutive chunks of one stream (of one kind, stamped or not)."""

    first_seq: int
    stream: str
    stamped: bool
    time: str
    parts: list[str]  # each chunk's lines joined by newlines
    lines: int
    size: int
    times: list[list[Any]]  # [line index, time] where a later chunk's read time starts

    def take(self, chunk: LogChunk, joined: str) -> bool:
        if (chunk.stream, chunk.stamped) != (self.stream, self.stamped) or self.size + len(joined) > BLOCK_BYTES:
            return False
        if not chunk.stamped and chunk.time != (self.times[-1][1] if self.times else self.time):
            self.times.append([self.lines, chunk.time])
        self.parts.append(joined)
        self.lines += len(chunk.texts)
        self.size += len(joined) + 1
        return True

    def row(self, execution_id: int, nul: str | None) -> dict[str, Any]:
        text = "\n".join(self.parts)
        return {"execution_id": execution_id, "first_seq": self.first_seq,
                "last_seq": self.first_seq + self.lines - 1, "time": _as_datetime(self.time),
                "times": self.times or None, "stream": self.stream, "stamped": self.stamped,
                "texts": text.replace("\x00", nul) if nul and "\x00" in text else text}


def _blocks(chunks: Sequence[LogChunk], seq: int) -> list[_Block]:
    """Chunks into blocks, seq numbers from `seq` on. A line holding a newline (a note, never a
    line read from a stream) is a block of its own: a block of one line is never split."""
    blocks: list[_Block] = []
    for chunk in chunks:
        n = len(chunk.texts)
        joined = "\n".join(chunk.texts)
        if joined.count("\n") != n - 1:
            for text in chunk.texts:  # each a block no chunk joins (its size past BLOCK_BYTES)
                blocks.append(_Block(seq, chunk.stream, chunk.stamped, chunk.time, [text], 1, BLOCK_BYTES + 1, []))
                seq += 1
            continue
        if n and (not blocks or not blocks[-1].take(chunk, joined)):
            blocks.append(_Block(seq, chunk.stream, chunk.stamped, chunk.time, [joined], n, len(joined), []))
        seq += n
    return blocks


def _blocks_back(s: Any, execution_id: int, before: int | None, limit: int) -> list[LogBlock]:
    """The blocks holding the last `limit` lines before seq `before` (of the whole log: None), read
    one, then two, four... at a time, newest first."""
    found: list[LogBlock] = []
    lines = 0
    upper = before
    per_read = 1
    while lines < limit:
        query = select(LogBlock).where(LogBlock.execution_id == execution_id)
        if upper is not None:
            query = query.where(LogBlock.first_seq < upper)
        batch = s.exec(query.order_by(col(LogBlock.first_seq).desc()).limit(per_read)).all()
        for block in batch:
            lines += (block.last_seq if before is None else min(block.last_seq, before - 1)) - block.first_seq + 1
        found += batch
        if len(batch) < per_read:
            break
        upper = batch[-1].first_seq
        per_read = min(per_read * 2, BLOCKS_PER_READ)
    return found


class LogsStore(Database):
    def append_log(self, execution_id: int, lines: Sequence[LogLine]) -> None:
        """Store a batch of log lines (and the metadata points among them) in one transaction."""
        chunks = [LogChunk(line.stream, [line.text], line.sql_time or sql_time(line.when()),
                           metadata=None if line.metadata is None else {0: line.metadata}) for line in lines]
        self.append_chunks(execution_id, chunks)

    def append_chunks(self, execution_id: int, chunks: Sequence[LogChunk]) -> None:
        """Store chunks of log lines, in their order, in one transaction: seq numbers follow on."""
        count = sum(len(chunk.texts) for chunk in chunks)
        if not count:
            return
        with self.writing(), self.engine.connect() as conn, conn.begin():
            if self._write_guard is not None:
                conn.exec_driver_sql(self._write_guard)
            if self.fence is not None:
                self.check_fence(conn)
            last = conn.execute(
                update(Execution)
                .where(col(Execution.id) == execution_id)
                .values(last_seq=Execution.last_seq + count)
                .returning(Execution.last_seq)
            ).one()
            first = seq = last.last_seq - count + 1
            points: list[dict[str, Any]] = []
            latest: dict[str, Any] = {}  # the batch's last value of each key
            for chunk in chunks:
                for i, point in (chunk.metadata or {}).items():
                    points.append({"execution_id": execution_id, "seq": seq + i,
                                   "time": _as_datetime(chunk.line(i)[0]), "data": point})
                    latest.update(point)
                seq += len(chunk.texts)
            # PostgreSQL's text cannot hold U+0000: a line with one would fail forever.
            nul = "\ufffd" if conn.dialect.name != "sqlite" else None
            blocks = [block.row(execution_id, nul) for block in _blocks(chunks, first)]
            conn.execute(insert(LogBlock), blocks)
            if points:
                conn.execute(insert(MetadataPoint), points)
                merged = latest_merged(conn.dialect.name, latest)
                if merged is not None:
                    conn.execute(update(Execution).where(col(Execution.id) == execution_id)
                                 .values(metadata_latest=merged))

    def metadata_keys(self, execution_id: int) -> list[str]:
        """The keys of an execution's latest metadata values (read once by an ingester that starts)."""
        with self.read() as s:
            latest = s.exec(select(Execution.metadata_latest).where(Execution.id == execution_id)).first()
        return list(latest or {})

    def log_has_line(self, execution_id: int, stream: str, text: str) -> bool:
        """Whether a line holding `text` was stored on `stream` (a note vh-orch writes once)."""
        with self.read() as s:
            return s.exec(select(LogBlock.first_seq).where(
                LogBlock.execution_id == execution_id, LogBlock.stream == stream,
                col(LogBlock.texts).contains(text, autoescape=True)).limit(1)).first() is not None

    # -- reading: status rows, older log rows and log blocks, merged by seq ------------------

    def stored_log(self, execution_id: int, after: int = 0, first_read: int | None = None
                   ) -> Iterator[Event | LogBlock]:
        """Everything stored after seq `after`, in seq order, as stored: a LogBlock for a block of
        lines (the first may start at or before `after`: block_text and block_events cut it), an
        Event for each status change and older log row. Blocks are read `first_read` at a time (by
        default BLOCKS_PER_READ), twice as many each read up to BLOCKS_PER_READ (a few megabytes), rows ROWS_PER_READ at a
        time, each read in a short transaction of its own: a log of millions of lines streams
        through in a few dozen reads.

        Only what is stored up to the execution's last_seq as it is read first: every seq up to it is
        committed (each is given out by an UPDATE of that row, whose lock the writer holds until it
        commits), so the blocks and the rows read after agree. Without that bound, a follower could
        read the blocks (none yet), then the rows (the lines and `complete` stored meanwhile) and
        print `complete` without the lines before it."""
        with self.read() as s:
            upto = s.exec(select(Execution.last_seq).where(Execution.id == execution_id)).first() or 0
        blocks = self._paged(lambda s, seq, n: s.exec(select(LogBlock).where(
            LogBlock.execution_id == execution_id, LogBlock.last_seq > seq, LogBlock.last_seq <= upto)
            .order_by(col(LogBlock.last_seq)).limit(n)
        ).all(), lambda block: block.last_seq, after, first_read or BLOCKS_PER_READ, BLOCKS_PER_READ)
        rows = self._paged(lambda s, seq, n: s.exec(select(ExecutionEvent).where(
            ExecutionEvent.execution_id == execution_id, ExecutionEvent.seq > seq, ExecutionEvent.seq <= upto)
            .order_by(col(ExecutionEvent.seq)).limit(n)).all(), lambda row: row.seq, after, ROWS_PER_READ,
            ROWS_PER_READ)
        for piece in heapq.merge(blocks, rows, key=lambda p: p.first_seq if isinstance(p, LogBlock) else p.seq):
            yield piece if isinstance(piece, LogBlock) else Event.of_row(piece)

    def _paged(self, page: Callable[[Any, int, int], Sequence[Any]], last_seq: Callable[[Any], int], after: int,
               first: int, most: int) -> Iterator[Any]:
        """What `page(session, after, n)` reads, n at a time (`first`, then twice as many each read up to
        `most`), each read a transaction of its own, until a read comes back short."""
        n = max(1, first)
        while True:
            with self.read() as s:
                got = page(s, after, n)
            yield from got
            if len(got) < n:
                return
            after, n = last_seq(got[-1]), min(n * 2, most)

    def events_page(self, execution_id: int, *, after: int | None = None, before: int | None = None,
                    limit: int = 1000) -> list[Event]:
        """Events in order: the first `limit` after seq `after`, or the last `limit` before seq
        `before` (or the log's last `limit` when neither is given).

        Blocks are read until they hold `limit` wanted lines (one block is thousands of lines), so a
        page costs the blocks it shows, not the rest of the log."""
        return self._page(execution_id, after, before, limit, EVENTS)

    def event_rows_page(self, execution_id: int, *, after: int | None = None, before: int | None = None,
                        limit: int = 1000) -> list[EventRow]:
        """events_page as EventRows (what the API's pages are made of)."""
        return self._page(execution_id, after, before, limit, EVENT_ROWS)

    def _page(self, execution_id: int, after: int | None, before: int | None, limit: int, form: _Form[T]) -> list[T]:
        if after is not None:
            events: list[T] = []
            for piece in self.stored_log(execution_id, after, first_read=1):
                if isinstance(piece, Event):
                    events.append(form.of_event(piece))
                else:
                    events += form.of_block(piece, after, None, limit - len(events))
                if len(events) >= limit:
                    break
            return events[:limit]
        rows = select(ExecutionEvent).where(ExecutionEvent.execution_id == execution_id)
        if before is not None:
            rows = rows.where(ExecutionEvent.seq < before)
        with self.read() as s:
            return _merged(s.exec(rows.order_by(col(ExecutionEvent.seq).desc()).limit(limit)),
                           _blocks_back(s, execution_id, before, limit), None, before, limit, form)[-limit:]

    def events_after(self, execution_id: int, after_seq: int, limit: int = 10_000) -> list[Event]:
        return self.events_page(execution_id, after=after_seq, limit=limit)

    def count_events(self, execution_id: int, kind: str = "log") -> int:
        with self.read() as s:
            rows = s.exec(select(func.count()).select_from(ExecutionEvent).where(
                ExecutionEvent.execution_id == execution_id, ExecutionEvent.kind == kind)).one()
            if kind != "log":
                return int(rows)
            lines = s.exec(select(func.coalesce(func.sum(LogBlock.last_seq - LogBlock.first_seq + 1), 0))
                           .where(LogBlock.execution_id == execution_id)).one()
            return int(rows) + int(lines)

    def command_lines(self, execution_id: int) -> dict[str, int]:
        """Per stream, how many lines of the command's output are stored: the stamped ones (a remote
        container's lines carry a stamp; vh-orch's own notes never do). A re-attached stream skips these."""
        with self.read() as s:
            rows = s.exec(select(LogBlock.stream, func.sum(LogBlock.last_seq - LogBlock.first_seq + 1))
                          .where(LogBlock.execution_id == execution_id, col(LogBlock.stamped).is_(True))
                          .group_by(LogBlock.stream)).all()
        counts = {"stdout": 0, "stderr": 0}
        counts.update({stream: int(n) for stream, n in rows})
        return counts
