"""Log lines and metadata points: one `execution_event` row a line, numbered in order.

The ingester hands over chunks (the lines of one read of one stream); on SQLite a chunk is
one INSERT ... SELECT over a JSON array, so the per-line work happens inside SQLite, with the
GIL released, instead of in Python. Single lines (`append_log`) take the plain path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import col

from vh_orch.orchestrator.models import Execution, ExecutionEvent, MetadataPoint

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
        if self.stamped and has_stamp(raw):
            return f"{raw[:10]} {raw[11:26]}", raw[STAMP_WIDTH:]
        return self.time, raw


def has_stamp(raw: str) -> bool:
    return raw[10:11] == "T" and raw[29:31] == "Z "


def sql_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores for a datetime, in UTC (so reads parse it back)."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _as_datetime(stored: str) -> datetime:
    return datetime.fromisoformat(f"{stored}+00:00")


_INSERT = "INSERT INTO execution_event (execution_id, seq, time, kind, stream, text) "
_INSERT_AT = _INSERT + "SELECT ?1, ?2 + key, ?3, 'log', ?4, value FROM json_each(?5)"
# The same test as has_stamp(), and the same cut as LogChunk.line().
_INSERT_STAMPED = _INSERT + (
    "SELECT ?1, ?2 + key, "
    "CASE WHEN substr(value, 11, 1) = 'T' AND substr(value, 30, 2) = 'Z ' "
    "THEN substr(value, 1, 10) || ' ' || substr(value, 12, 15) ELSE ?3 END, 'log', ?4, "
    "CASE WHEN substr(value, 11, 1) = 'T' AND substr(value, 30, 2) = 'Z ' "
    f"THEN substr(value, {STAMP_WIDTH + 1}) ELSE value END FROM json_each(?5)"
)
_INSERT_ROWS = _INSERT + "VALUES (?, ?, ?, 'log', ?, ?)"


class LogsStore:
    engine: Any
    fence: Any

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
        with self.engine.connect() as conn, conn.begin():
            if self.fence is not None:
                self.check_fence(conn)  # type: ignore[attr-defined]
            last = conn.execute(
                update(Execution)
                .where(col(Execution.id) == execution_id)
                .values(last_seq=Execution.last_seq + count)
                .returning(Execution.last_seq, Execution.metadata_latest)
            ).one()
            seq = last.last_seq - count + 1
            points: list[dict[str, Any]] = []
            latest = dict(last.metadata_latest or {})
            sqlite = conn.dialect.name == "sqlite"
            rows: list[Any] = []  # lines stored one row a statement (not SQLite, or not JSON-safe)
            for chunk in chunks:
                for i, point in (chunk.metadata or {}).items():
                    points.append({"execution_id": execution_id, "seq": seq + i,
                                   "time": _as_datetime(chunk.line(i)[0]), "data": point})
                    latest.update(point)
                if sqlite and (len(chunk.texts) > 1 or chunk.stamped):
                    payload = json.dumps(chunk.texts, ensure_ascii=False)
                    # SQLite's JSON functions end a string at U+0000: such chunks take the row path.
                    if "\\u0000" not in payload:
                        conn.exec_driver_sql(_INSERT_STAMPED if chunk.stamped else _INSERT_AT,
                                             (execution_id, seq, chunk.time, chunk.stream, payload))
                        seq += len(chunk.texts)
                        continue
                for i in range(len(chunk.texts)):
                    when, text = chunk.line(i)
                    rows.append((execution_id, seq + i, when, chunk.stream, text) if sqlite else
                                {"execution_id": execution_id, "seq": seq + i, "time": _as_datetime(when),
                                 "kind": "log", "stream": chunk.stream,
                                 # PostgreSQL's text cannot hold U+0000: a line with one would fail forever.
                                 "text": text.replace("\x00", "\ufffd")})
                seq += len(chunk.texts)
            if rows and sqlite:
                # Times already in the text form SQLAlchemy's SQLite DateTime stores skip per-row processing.
                conn.exec_driver_sql(_INSERT_ROWS, rows)
            elif rows:
                conn.execute(insert(ExecutionEvent), rows)
            if points:
                conn.execute(insert(MetadataPoint), points)
                conn.execute(
                    update(Execution).where(col(Execution.id) == execution_id).values(metadata_latest=latest)
                )
