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
