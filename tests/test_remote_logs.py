"""The log pump of remote containers (`docker logs --timestamps` over SSH), on raw bytes."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from vh_orch.bootstrap.remote import RemoteContainer, ResumePoint


def pump(chunks: list[bytes], point: ResumePoint) -> bytes:
    feed = iter([*chunks, b""])
    sink = io.BytesIO()
    RemoteContainer._copy(lambda _n: next(feed), sink, point)
    return sink.getvalue()


def test_lines_without_a_docker_timestamp_are_not_stored_and_never_move_the_resume_point() -> None:
    """A login shell's noise or docker's own complaint on the stream is not the command's output;
    taken as a line it would also end the skipping of lines already stored (its "time" sorts after
    every stamp) and repeat them."""
    stored = ResumePoint.at(datetime(2026, 12, 1, 11, 0, 0, 223456, tzinfo=UTC), ["line 2"])
    out = pump([b"pyenv: cannot remove /root/.pyenv/shims/.pyenv-shim\n"
                b"2026-12-01T11:00:00.123456789Z line 1\n2026-12-01T11:00:00.2234567",
                b"89Z line 2\n2026-12-01T11:00:00.323456789Z line 3\nError: No such container: x\n"], stored)
    assert out == b"2026-12-01T11:00:00.323456789Z line 3\n"
    assert stored.stamp == b"2026-12-01T11:00:00.323456"


def test_a_stream_of_stamped_lines_passes_whole() -> None:
    data = b"".join(b"2026-12-01T11:00:%02d.000000001Z line %d\n" % (i, i) for i in range(50))
    assert pump([data[:100], data[100:]], ResumePoint()) == data


class _TailTransport:
    """Answers `docker logs --tail` with fixed bytes (a test double of SSHTransport.start)."""

    def __init__(self, stdout: bytes, stderr: bytes = b"") -> None:
        self.data = {"out": [stdout, b""], "err": [stderr, b""]}
        self.commands: list[str] = []

    def start(self, command: str):  # type: ignore[no-untyped-def]
        self.commands.append(command)
        data = self.data
        channel = type("Channel", (), {"recv": lambda _s, _n: data["out"].pop(0),
                                       "recv_stderr": lambda _s, _n: data["err"].pop(0)})()
        return type("Command", (), {"channel": channel, "wait": lambda _s, _t: 0, "close": lambda _s: None})()


def _stamped(first: int, last: int) -> bytes:
    return b"".join(b"2026-12-01T11:%02d:%02d.000000001Z line %d\n" % (i // 60, i % 60, i) for i in range(first, last))


def test_the_tail_of_a_finished_log_passes_on_what_the_follow_missed_when_it_reaches_back() -> None:
    """After the exit, the log's last lines are enough when enough of them are older than the last
    line passed on: only the newer ones are passed on, and the whole log is not read again."""
    from vh_orch.bootstrap import remote

    passed = _stamped(0, 1000)
    point = ResumePoint()
    pump([passed], point)  # what the follow passed on
    transport = _TailTransport(_stamped(1000 - remote.TAIL_SLACK - 5, 1010))
    container = object.__new__(RemoteContainer)
    container.transport, container.name = transport, "c"  # type: ignore[assignment]
    container.resume = {"stdout": point, "stderr": ResumePoint()}
    out, err = io.BytesIO(), io.BytesIO()
    assert container._tail_covers(out, err)
    assert out.getvalue() == _stamped(1000, 1010) and err.getvalue() == b""
    assert transport.commands == [f"docker logs --timestamps --tail {remote.TAIL_LINES} c"]


def test_a_tail_that_does_not_reach_back_passes_nothing_on() -> None:
    """Too few of the last lines are older than the last line passed on: lines may be missing
    in between, so the log is read from the resume point instead."""
    from vh_orch.bootstrap import remote

    point = ResumePoint()
    pump([_stamped(0, 1000)], point)
    container = object.__new__(RemoteContainer)
    container.transport = _TailTransport(_stamped(1000 - remote.TAIL_SLACK + 1, 3000))  # type: ignore[assignment]
    container.name = "c"
    container.resume = {"stdout": point, "stderr": ResumePoint()}
    out = io.BytesIO()
    assert not container._tail_covers(out, io.BytesIO())
    assert out.getvalue() == b""
