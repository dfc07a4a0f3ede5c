"""Log lines and metadata points, from raw bytes."""

from __future__ import annotations

import io

import pytest

from vh_orch.orchestrator.logs import MAX_LINE_BYTES, iter_lines, parse_metadata


def one_execution(url: str):  # type: ignore[no-untyped-def]
    """A migrated store (test_state's seeded one) with one execution in it."""
    from test_state import seeded

    from vh_orch.orchestrator.models import Execution

    store, project, commit, env = seeded(url)
    execution = store.create_execution(Execution(project_id=project.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                                 command="x", environment_id=env.id))  # type: ignore[arg-type]
    return store, execution


def lines(data: bytes, max_bytes: int = MAX_LINE_BYTES) -> list[str]:
    return list(iter_lines(io.BufferedReader(io.BytesIO(data)), max_bytes))  # type: ignore[arg-type]


def test_lines_are_split_on_newlines_and_a_missing_last_newline_keeps_the_line() -> None:
    assert lines(b"a\nb\r\n\nlast") == ["a", "b", "", "last"]


def test_a_long_line_is_split_at_the_limit_and_nothing_is_lost() -> None:
    data = b"x" * 25 + b"\nshort\n"
    assert lines(data, max_bytes=10) == ["x" * 10, "x" * 10, "xxxxx", "short"]


def test_a_multibyte_character_is_never_cut_at_the_split() -> None:
    text = "é" * 9  # 18 bytes
    out = lines(text.encode() + b"\n", max_bytes=5)
    assert "".join(out) == text
    assert all("\ufffd" not in piece for piece in out)


def test_bytes_that_are_not_utf8_are_replaced() -> None:
    assert lines(b"ok \xff\xfe end\n") == ["ok \ufffd\ufffd end"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"loss": 0.5, "epoch": 1}', {"loss": 0.5, "epoch": 1}),
        ('  {"nested": {"a": [1, 2]}}  ', {"nested": {"a": [1, 2]}}),
        ("[1, 2, 3]", None),
        ("42", None),
        ('"a string"', None),
        ('{"loss": NaN}', None),
        ('{"loss": Infinity}', None),
        ('{"loss": -Infinity}', None),
        ('{"loss": 0.5', None),
        ("{not json}", None),
        ("plain text", None),
        ("", None),
    ],
)
def test_only_json_objects_are_metadata(line: str, expected: dict | None) -> None:  # type: ignore[type-arg]
    assert parse_metadata(line) == expected


def test_a_locked_database_delays_log_lines_but_never_drops_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SQLite refuses writes while another connection holds the lock past the busy timeout:
    the writer retries with back-off, the readers wait when it falls behind, nothing is lost."""
    import sqlite3
    import threading
    import time

    from vh_orch.orchestrator import logs

    path = tmp_path / "state.db"
    store, execution = one_execution(f"sqlite:///{path}?timeout=0.2")
    n = 3 * logs.MAX_PENDING  # more than the backlog may hold: the reader must wait for the writer
    read_fd, write_fd = __import__("os").pipe()
    ingester = logs.LogIngester(store, execution.id)  # type: ignore[arg-type]
    ingester.follow(open(read_fd, "rb"), "stdout")

    locker = sqlite3.connect(path, timeout=5, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # the writer's batches now fail with "database is locked"
    writer = threading.Thread(target=lambda: open(write_fd, "wb").write(
        b"".join(b"line %d\n" % i for i in range(n))))
    writer.start()
    time.sleep(4.0)  # well past the 0.2 s busy timeout: many failed attempts
    assert writer.is_alive(), "the reader kept reading although nothing could be stored"
    locker.execute("COMMIT")
    locker.close()
    writer.join(60)
    assert ingester.close(timeout=120)
    texts = [e.text for e in store.events_after(execution.id, 0, limit=n + 10) if e.kind == "log"]  # type: ignore[arg-type]
    assert texts == [f"line {i}" for i in range(n)]


def readline_reference(data: bytes, max_bytes: int) -> list[str]:
    """How lines were cut before reads were split whole: readline(max_bytes), one line at a time."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stream = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
    out = []
    while chunk := stream.readline(max_bytes):
        if chunk.endswith(b"\n"):
            text = decoder.decode(chunk[:-1], final=True)
            out.append(text[:-1] if text.endswith("\r") else text)
        elif text := decoder.decode(chunk, final=False):
            out.append(text)
    if tail := decoder.decode(b"", final=True):
        out.append(tail)
    return out


@pytest.mark.parametrize("max_bytes", [7, 64, MAX_LINE_BYTES])
def test_lines_are_cut_the_same_however_the_reads_fall(max_bytes: int) -> None:
    """Whole reads are split at once and only reads with an over-long line go line by line: the
    lines are the same as reading one line at a time, wherever the reads happen to end."""
    import random

    from vh_orch.orchestrator.logs import LineSplitter

    rng = random.Random(max_bytes)
    pieces = [b"short", b"", b"\r", b"crlf\r", b"\xff\xfe bad", "é☕".encode() * 40, b"x" * (max_bytes - 1),
              b"y" * max_bytes, b"z" * (max_bytes + 1), "€".encode() * (max_bytes // 3 + 2), b"\xe2\x82", b"\t{}"]
    for _ in range(40):
        data = b"\n".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        if rng.random() < 0.5:
            data += b"\n"
        splitter = LineSplitter(max_bytes)
        got, pos = [], 0
        while pos < len(data):
            size = rng.choice([1, 2, 3, max_bytes - 1, max_bytes, max_bytes + 1, 1 << 16])
            got += splitter.feed(data[pos:pos + size])
            pos += size
        got += splitter.end()
        assert got == readline_reference(data, max_bytes), data


def test_chunks_are_stored_in_order_with_their_times_on_both_databases(db_url: str) -> None:
    """A chunk's lines become rows in order; a docker stamp is the line's time and not its text,
    a line without one keeps all its text and the chunk's time; metadata and (on SQLite, which
    keeps it) U+0000 survive; PostgreSQL stores U+FFFD for it instead of refusing the line."""
    from datetime import UTC, datetime

    from vh_orch.orchestrator.store import LogChunk

    store, execution = one_execution(db_url)
    read_at = "2026-12-02 10:00:00.000001"
    nul = "nul \x00 inside"
    stored_nul = nul if db_url.startswith("sqlite") else "nul \ufffd inside"  # PostgreSQL text has no U+0000
    store.append_chunks(execution.id, [  # type: ignore[arg-type]
        LogChunk("stdout", ["one", "two ☕", 'with "quotes" and \\ and \t'], read_at),
        LogChunk("stderr", ["2026-12-02T09:59:59.123456789Z stamped", "no stamp at all",
                            "2026-12-02T09:59:59.223456789Z "], read_at, stamped=True),
        LogChunk("stdout", [nul, '{"loss": 0.5}'], read_at, metadata={1: {"loss": 0.5}}),
    ])
    store.append_chunks(execution.id, [LogChunk("stdout", ["2026-12-02T09:59:59.323456789Z {\"a\": 1}"],  # type: ignore[arg-type]
                                                read_at, stamped=True, metadata={0: {"a": 1}})])
    events = [e for e in store.events_after(execution.id, 0) if e.kind == "log"]  # type: ignore[arg-type]
    at = datetime(2026, 12, 2, 10, 0, 0, 1)
    assert [(e.stream, e.text, e.time.replace(tzinfo=None)) for e in events] == [
        ("stdout", "one", at), ("stdout", "two ☕", at), ("stdout", 'with "quotes" and \\ and \t', at),
        ("stderr", "stamped", datetime(2026, 12, 2, 9, 59, 59, 123456)), ("stderr", "no stamp at all", at),
        ("stderr", "", datetime(2026, 12, 2, 9, 59, 59, 223456)),
        ("stdout", stored_nul, at), ("stdout", '{"loss": 0.5}', at),
        ("stdout", '{"a": 1}', datetime(2026, 12, 2, 9, 59, 59, 323456)),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    points = store.metadata_points(execution.id)  # type: ignore[arg-type]
    assert [(p.seq, p.data) for p in points] == [(events[7].seq, {"loss": 0.5}), (events[8].seq, {"a": 1})]
    assert points[1].time.astimezone(UTC).replace(tzinfo=None) == datetime(2026, 12, 2, 9, 59, 59, 323456)
    assert store.get_execution(execution.id).metadata_latest == {"loss": 0.5, "a": 1}  # type: ignore[arg-type]


def test_a_cut_stamped_line_keeps_its_stamp_and_every_byte(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The pieces of an over-long `docker logs --timestamps` line all take its docker time, and no
    piece loses the text up to its first blank to being taken for a stamp."""
    import os
    import threading

    from vh_orch.orchestrator import logs

    store, execution = one_execution(f"sqlite:///{tmp_path / 'state.db'}")
    long_text = "".join(f"word{i} " for i in range(40_000))  # about 250 KiB
    data = (b"2026-12-02T09:00:00.000000001Z before\n2026-12-02T09:00:01.000000001Z " + long_text.encode()
            + b"\n2026-12-02T09:00:02.000000001Z after\n")
    read_fd, write_fd = os.pipe()
    ingester = logs.LogIngester(store, execution.id)  # type: ignore[arg-type]
    ingester.follow(open(read_fd, "rb"), "stdout", timestamped=True)
    writer = threading.Thread(target=lambda: open(write_fd, "wb").write(data))
    writer.start()
    writer.join(60)
    assert ingester.close(timeout=60)
    events = [e for e in store.events_after(execution.id, 0) if e.kind == "log"]  # type: ignore[arg-type]
    assert events[0].text == "before" and events[-1].text == "after"
    pieces = events[1:-1]
    assert len(pieces) > 3 and "".join(e.text for e in pieces) == long_text
    assert all(len(e.text.encode()) <= logs.MAX_LINE_BYTES for e in pieces)
    assert {e.time.replace(tzinfo=None).second for e in pieces} == {1}
