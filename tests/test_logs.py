"""Log lines and metadata points, from raw bytes."""

from __future__ import annotations

import io

import pytest

from vh_orch.orchestrator.logs import MAX_LINE_BYTES, iter_lines, parse_metadata


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
    from vh_orch.orchestrator.db import upgrade
    from vh_orch.orchestrator.models import Execution
    from vh_orch.orchestrator.store import Store

    path = tmp_path / "state.db"
    url = f"sqlite:///{path}?timeout=0.2"
    upgrade(url)
    store = Store(url)
    project = store.create_project("p", None, None)
    commit = store.get_or_create_commit(project.id, "adhoc", "abc", "- step: {name: s, image: x, command: x}")  # type: ignore[arg-type]
    env, _ = store.ensure_environment("local", "local")
    execution = store.create_execution(Execution(project_id=project.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                                 command="x", environment_id=env.id))  # type: ignore[arg-type]
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
