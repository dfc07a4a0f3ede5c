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


def test_pages_read_the_same_events_across_blocks_status_rows_and_older_log_rows(
        db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Log lines are stored a block a chunk; status changes and lines stored before blocks are rows.
    Every page (after any seq, before any seq, the last N) merges them by seq, cut where asked;
    a note holding newlines stays one line; counts add rows and blocks. The whole-log readers (a
    block's text, its rows, what `exec logs` prints, plain and --json) say the same, read in any
    batch size."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from vh_orch.orchestrator.models import Execution, ExecutionEvent
    from vh_orch.orchestrator.store import LogChunk, LogLine

    store, execution = one_execution(db_url)
    at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    expected = [(e.seq, e.kind, e.text) for e in store.events_after(execution.id, 0)]  # type: ignore[arg-type]
    statuses = len(expected)
    first = len(expected) + 1
    with store.engine.begin() as conn:  # two lines as older versions stored them
        conn.execute(insert(ExecutionEvent), [
            {"execution_id": execution.id, "seq": seq, "time": at, "kind": "log", "stream": "stdout", "text": text}
            for seq, text in ((first, "old one"), (first + 1, "old two"))])
        conn.execute(Execution.__table__.update().where(Execution.__table__.c.id == execution.id)  # type: ignore[attr-defined]
                     .values(last_seq=first + 1))
    expected += [(first, "log", "old one"), (first + 1, "log", "old two")]

    def chunk(stream: str, texts: list[str], stamped: bool = False) -> None:
        store.append_chunks(execution.id, [LogChunk(stream, texts, "2026-12-02 10:00:01.000000", stamped)])  # type: ignore[arg-type]
        for text in texts:
            expected.append((expected[-1][0] + 1, "log", text[31:] if stamped else text))

    chunk("stdout", [f"a{i}" for i in range(5)])
    chunk("stderr", ["2026-12-02T10:00:00.000000001Z e0", "2026-12-02T10:00:00.000000002Z e1"], stamped=True)
    store.set_status(execution.id, "started")  # type: ignore[arg-type]
    expected.append((expected[-1][0] + 1, "status", "started"))
    store.append_log(execution.id, [LogLine(at, "stderr", "a note\nof two lines"), LogLine(at, "stdout", "")])  # type: ignore[arg-type]
    expected += [(expected[-1][0] + 1, "log", "a note\nof two lines"), (expected[-1][0] + 2, "log", "")]
    chunk("stdout", ["single"])
    chunk("stdout", [f"b{i}" for i in range(7)])
    chunk("stdout", ['quote " back \\ tab \t bell \x07 é ☕ \U0001f600'])
    store.set_status(execution.id, "error", "over")  # type: ignore[arg-type]
    expected.append((expected[-1][0] + 1, "status", "error: over"))
    last = expected[-1][0]
    assert [seq for seq, _, _ in expected] == list(range(1, last + 1))
    assert store.get_execution(execution.id).last_seq == last  # type: ignore[arg-type]

    def seen(events: list) -> list[tuple[int, str, str]]:  # type: ignore[type-arg]
        return [(e.seq, e.kind, e.text) for e in events]

    from vh_orch.api.shapes import event_json, event_rows_json

    def same_rows(events: list, **page: int) -> list:  # type: ignore[type-arg]
        """The API's page (EventRows spelt as JSON) is event_json of each of the same events."""
        assert json.loads(event_rows_json(store.event_rows_page(execution.id, **page))) == \
            [event_json(e) for e in events]  # type: ignore[arg-type]
        return events

    for limit in (1, 3, 1000):
        assert seen(same_rows(store.events_page(execution.id, limit=limit), limit=limit)) == expected[-limit:]  # type: ignore[arg-type]
        for after in range(last + 1):
            assert seen(same_rows(store.events_page(execution.id, after=after, limit=limit), after=after,  # type: ignore[arg-type]
                                  limit=limit)) == expected[after:after + limit]
        for before in range(1, last + 2):
            assert seen(same_rows(store.events_page(execution.id, before=before, limit=limit), before=before,  # type: ignore[arg-type]
                                  limit=limit)) == expected[max(0, before - 1 - limit):before - 1]
    assert store.count_events(execution.id) == sum(kind == "log" for _, kind, _ in expected)  # type: ignore[arg-type]
    assert store.count_events(execution.id, "status") == statuses + 2  # type: ignore[arg-type]
    streams = [e.stream for e in store.events_after(execution.id, 0) if e.kind == "log"]  # type: ignore[arg-type]
    assert streams == ["stdout"] * 7 + ["stderr"] * 3 + ["stdout"] * 10

    from vh_orch.cli.logprint import LogPrinter, print_stored
    from vh_orch.orchestrator.store import logs as store_logs
    from vh_orch.services.logs import log_text
    from vh_orch.timeutil import iso

    every = store.events_after(execution.id, 0)  # type: ignore[arg-type]
    for per_read, rows_per_read in ((1, 1), (2, 2), (8, 1000)):
        monkeypatch.setattr(store_logs, "BLOCKS_PER_READ", per_read)
        monkeypatch.setattr(store_logs, "ROWS_PER_READ", rows_per_read)
        assert "".join(log_text(store, execution.id)) == "".join(  # type: ignore[arg-type]
            f"{text}\n" for _, kind, text in expected if kind == "log")
        for after in range(last + 1):
            pieces = list(store.stored_log(execution.id, after))  # type: ignore[arg-type]
            blocks = [p for p in pieces if not isinstance(p, store_logs.Event)]
            flat = [e for p in pieces for e in ([p] if isinstance(p, store_logs.Event) else store_logs.block_events(p, after))]
            assert seen(flat) == expected[after:]
            assert [row for block in blocks for row in store_logs.block_rows(block, after)] == \
                [(e.seq, iso(e.time), e.text) for block in blocks for e in store_logs.block_events(block, after)]
            for json_lines in (False, True):
                printer = LogPrinter(json_lines, raw=True)
                assert print_stored(store, printer, execution.id, after) == (last if after < last else after)  # type: ignore[arg-type]
                printer.flush()
                out, err = capsys.readouterr()
                wanted = [e for e in every[after:] if e.kind == "log" or json_lines]
                if json_lines:
                    assert out == "".join(json.dumps({"seq": e.seq, "time": iso(e.time), "kind": e.kind,
                                                      "stream": e.stream, "text": e.text}) + "\n" for e in wanted)
                else:
                    assert (out, err) == ("".join(f"{e.text}\n" for e in wanted if e.stream == "stdout"),
                                          "".join(f"{e.text}\n" for e in wanted if e.stream == "stderr"))


def test_the_command_lines_a_reattached_stream_skips_are_the_stamped_ones(db_url: str) -> None:
    """A re-attached remote container's output comes again from its start, and the ingester skips
    the lines stored already: per stream, the stamped lines (the command's), never vh-orch's notes."""
    from vh_orch.orchestrator.store import LogChunk

    store, execution = one_execution(db_url)
    assert store.command_lines(execution.id) == {"stdout": 0, "stderr": 0}  # type: ignore[arg-type]
    read_at = "2026-12-02 10:00:05.000000"
    t1, t2 = "2026-12-02T10:00:01.000000001Z ", "2026-12-02T10:00:02.000000001Z "
    store.append_chunks(execution.id, [  # type: ignore[arg-type]
        LogChunk("stdout", [t1 + "x", t2 + "y1"], read_at, stamped=True),
        LogChunk("stderr", [t1 + "err"], read_at, stamped=True),
        LogChunk("stderr", ["vh-orch: a note"], read_at),
        LogChunk("stdout", [t2 + "y2", t2 + "y3"], read_at, stamped=True),
    ])
    store.append_chunks(execution.id, [LogChunk("stdout", [t2 + "y4"], read_at, stamped=True)])  # type: ignore[arg-type]
    assert store.command_lines(execution.id) == {"stdout": 5, "stderr": 1}  # type: ignore[arg-type]


def test_the_reads_of_one_stream_share_a_block_and_keep_their_own_times(db_url: str) -> None:
    """Consecutive chunks of a stream are one block (up to BLOCK_BYTES), each line keeping the time
    its read had; the other stream, a stamped chunk or a full block start a new one."""
    from sqlmodel import select

    from vh_orch.orchestrator.models import LogBlock
    from vh_orch.orchestrator.store import LogChunk
    from vh_orch.orchestrator.store.logs import BLOCK_BYTES

    store, execution = one_execution(db_url)
    t = ["2026-12-02 10:00:0%d.000000" % i for i in range(6)]
    big = "x" * (BLOCK_BYTES // 2)
    store.append_chunks(execution.id, [  # type: ignore[arg-type]
        LogChunk("stdout", ["a", "b"], t[0]), LogChunk("stdout", ["c"], t[1]), LogChunk("stdout", ["d", "e"], t[1]),
        LogChunk("stdout", ["f"], t[2]),
        LogChunk("stderr", ["g"], t[2]),
        LogChunk("stdout", ["2026-12-02T09:00:00.000000001Z h"], t[3], stamped=True),
        LogChunk("stdout", [big, "i"], t[4]), LogChunk("stdout", [big], t[5]),
    ])
    events = [e for e in store.events_after(execution.id, 0) if e.kind == "log"]  # type: ignore[arg-type]
    assert [(e.text[:3], e.stream, e.time.replace(tzinfo=None).isoformat(" ", "microseconds")) for e in events] == [
        ("a", "stdout", t[0]), ("b", "stdout", t[0]), ("c", "stdout", t[1]), ("d", "stdout", t[1]),
        ("e", "stdout", t[1]), ("f", "stdout", t[2]), ("g", "stderr", t[2]),
        ("h", "stdout", "2026-12-02 09:00:00.000000"), ("xxx", "stdout", t[4]), ("i", "stdout", t[4]),
        ("xxx", "stdout", t[5])]
    with store.read() as s:
        blocks = [(b.last_seq - b.first_seq + 1, b.stream) for b in s.exec(select(LogBlock).order_by(LogBlock.first_seq))]
    assert blocks == [(6, "stdout"), (1, "stderr"), (1, "stdout"), (2, "stdout"), (1, "stdout")]
    assert store.events_page(execution.id, before=events[4].seq, limit=2)[0].time == events[2].time  # type: ignore[arg-type]


def test_a_follower_never_reads_an_end_without_the_lines_stored_before_it(db_url: str) -> None:
    """A follower reads the blocks, then the status rows, each in a read of its own. Lines and the
    end stored between those two reads (a short command ends within milliseconds of its output)
    must not show the end alone: what one read of the log returns stops at the execution's last_seq
    as it began, and the next read returns the lines, then the end."""
    from contextlib import contextmanager

    from vh_orch.orchestrator.store import LogChunk
    from vh_orch.orchestrator.store.logs import Event

    store, execution = one_execution(db_url)
    store.admit_created()
    reads = 0
    inner = store.read

    @contextmanager
    def read():  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        if reads == 3:  # after the bound's read and the blocks' read, before the status rows' read
            store.append_chunks(execution.id, [LogChunk("stdout", ["one", "two"], "2026-12-02 10:00:00.000001")])  # type: ignore[arg-type]
            store.request_stop(execution.id, "asked")  # type: ignore[arg-type]
        with inner() as s:
            yield s

    store.read = read  # type: ignore[method-assign]
    first = list(store.stored_log(execution.id, after=0))  # type: ignore[arg-type]
    store.read = inner  # type: ignore[method-assign]
    texts = lambda pieces: [p.text if isinstance(p, Event) else p.texts for p in pieces]  # noqa: E731
    assert texts(first) == ["created", "queued"]
    last = max(p.seq if isinstance(p, Event) else p.last_seq for p in first)
    assert texts(store.stored_log(execution.id, after=last)) == ["one\ntwo", "stopped: asked"]  # type: ignore[arg-type]
