"""A remote container's output through the relay on its host (remote_logs.py): the wire's pieces on
raw bytes, then real containers on a real sshd host: the reader paused, the connections cut, the
follower replaced mid-stream, the launch cut on the host; every line stored exactly once in a real
database."""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path

import pytest

from conftest import BUSYBOX, SSHPool
from vh_orch.bootstrap.remote_logs import LAUNCH_DIR, OUTPUT_FILE, Demux, RemoteContainer, Stamper
from vh_orch.orchestrator.logs import LogIngester

HEAD = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\n\r\n"


def frame(kind: int, data: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def test_frames_are_split_by_stream_whatever_the_reads_cut() -> None:
    wire = HEAD + frame(1, b"out 1\n") + frame(2, b"err 1\n") + frame(1, b"out 2\nout") + frame(3, b"engine: oops")
    for cut in range(1, len(wire)):
        demux = Demux()
        got: dict[int, bytes] = {1: b"", 2: b""}
        for piece in (wire[:cut], wire[cut:]):
            for kind, data in demux.feed(piece).items():
                got[kind] += data
        assert got == {1: b"out 1\nout 2\nout", 2: b"err 1\n"} and demux.aligned
        assert demux.errors == [b"engine: oops"]
    short = Demux()
    assert not short.feed(HEAD + frame(1, b"abc")[:5]) and not short.aligned


def test_a_file_that_does_not_start_with_the_engines_answer_is_refused() -> None:
    with pytest.raises(ValueError):
        Demux().feed(b"x" * (1 << 17))


def test_each_line_gets_one_stamp_however_its_bytes_arrive() -> None:
    stamper = Stamper()
    s = b"2026-12-01T11:00:00.000000000Z "
    out = b"".join(stamper.feed(piece, s) for piece in (b"a\nb", b"b\n", b"\n", b"c"))
    assert out == s + b"a\n" + s + b"bb\n" + s + b"\n" + s + b"c"


def test_the_ingester_skips_the_same_lines_from_the_same_bytes(db_url: str) -> None:
    """A re-attached stream's first N lines are those stored already, cut from the same bytes the
    same way: an over-long line's pieces count as the lines they are stored as."""
    from test_logs import one_execution

    from vh_orch.orchestrator.logs import MAX_LINE_BYTES, LogIngester

    s = b"2026-12-01T11:00:00.000000000Z "
    lines = [s + b"short", s + b"x" * (MAX_LINE_BYTES * 2), s + b"after"]
    data = b"\n".join(lines) + b"\n"
    store, execution = one_execution(db_url)
    first = LogIngester(store, execution.id)  # type: ignore[arg-type]
    read_end, write_end = os.pipe()
    first.follow(open(read_end, "rb"), "stdout", timestamped=True)
    os.write(write_end, data[:len(lines[0]) + 1 + MAX_LINE_BYTES + 100])  # the long line's first piece and more
    deadline = time.monotonic() + 30
    while store.command_lines(execution.id)["stdout"] < 2:  # type: ignore[arg-type]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.let_go()  # its follower stops (RemoteContainer.release): the cut piece is never stored
    os.close(write_end)
    first.close(30)
    stored = store.command_lines(execution.id)["stdout"]  # type: ignore[arg-type]
    again = LogIngester(store, execution.id)  # type: ignore[arg-type]
    again.follow(io.BytesIO(data), "stdout", timestamped=True, skip=stored)
    assert again.close(30)
    texts = [e.text for e in store.events_after(execution.id, 0) if e.kind == "log"]  # type: ignore[arg-type]
    assert "".join(texts) == "short" + "x" * (MAX_LINE_BYTES * 2) + "after"
    assert texts[0] == "short" and texts[-1] == "after"


# -- real containers on a real sshd host --------------------------------------------------------


class Host:
    """One of the pool's sshd hosts, a transport to it, and the remote docker runtime on it."""

    def __init__(self, pool: SSHPool, tmp_path: Path) -> None:
        from vh_orch.bootstrap.remote import RemoteDockerRuntime
        from vh_orch.bootstrap.ssh import SSHTarget, SSHTransport

        self.host = pool.hosts[0]
        self.transport = SSHTransport(SSHTarget(self.host.address, 22, "root", str(pool.client_key),
                                                self.host.host_key))
        self.tmp = tmp_path
        self.runtime = RemoteDockerRuntime(self.transport, str(tmp_path / "workdir"))
        self.names: list[str] = []

    def spec(self, command: str):  # type: ignore[no-untyped-def]
        from vh_orch.bootstrap.runtimes import RunSpec

        folder = self.tmp / f"exec-{uuid.uuid4().hex[:8]}"
        for name in ("repository", "inputs", "config", "outputs"):
            (folder / name).mkdir(parents=True)
        spec = RunSpec(execution_id=1, command=command, folder=folder, env={},
                       cluster_id=f"t{uuid.uuid4().hex[:8]}", attempt=1, image=BUSYBOX, pull_policy="never")
        self.names.append(spec.container_name)
        self.runtime.prepare(spec)
        return spec

    def sh(self, command: str) -> str:
        result = self.transport.run(command, timeout=120)
        assert result.code == 0, result.stderr
        return result.stdout

    def close(self) -> None:
        if self.names:
            self.transport.run("docker rm -f " + " ".join(self.names) + " >/dev/null 2>&1; true")
        self.transport.close()


@pytest.fixture
def host(ssh_pool: SSHPool, docker_images: None, tmp_path: Path):  # type: ignore[no-untyped-def]
    h = Host(ssh_pool, tmp_path)
    yield h
    h.close()


def stored_texts(store, execution_id: int, stream: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.text for e in store.events_after(execution_id, 0, limit=1_000_000)
            if e.kind == "log" and e.stream == stream]


def followed(store, execution_id: int, container: RemoteContainer) -> LogIngester:  # type: ignore[no-untyped-def]
    """An ingester storing both of the container's streams, as a runner's does."""
    ingester = LogIngester(store, execution_id)
    ingester.follow(container.stdout, "stdout", timestamped=True)
    ingester.follow(container.stderr, "stderr", timestamped=True)
    return ingester


def wait_for(what: str, check, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


COUNT = "for i in $(seq 1 300); do echo line $i; echo err $i >&2; [ $((i % 30)) = 0 ] && sleep 0.1; done; printf end"
EXPECTED_OUT = [f"line {i}" for i in range(1, 301)] + ["end"]
EXPECTED_ERR = [f"err {i}" for i in range(1, 301)]


def test_the_runtime_launches_follows_and_reads_the_exit(host: Host) -> None:
    """RemoteDockerRuntime.start: the container's output from its first byte, each stream on its own."""
    spec = host.spec("echo first; echo second >&2; exit 3")
    container = host.runtime.start(spec)
    assert container.wait(60) == 3
    assert container.stdout.read().endswith(b"Z first\n") and container.stderr.read().endswith(b"Z second\n")


def test_a_paused_reader_never_holds_the_container_up(host: Host, db_url: str) -> None:
    """The process that follows the relay's file on the host is SIGSTOPped, and the daemon's side
    reads nothing either, while the container writes far more than every buffer on the way holds:
    the container runs to its end all the same; once the reader goes on, every line is stored once."""
    from test_logs import one_execution

    lines = 400_000  # about 2.9 MB: past the SSH window, the pipes and the engine's attach buffers
    spec = host.spec(f"sleep 1; seq 1 {lines}; echo done >&2")
    container = host.runtime.start(spec)
    folder = host.runtime.remote_folder(spec)
    # The follower on the host: `tail -c +K -f FOLDER/.vh-output`, started by this test's runtime.
    wait_for("the follower's tail", lambda: host.sh(f"pgrep -f '[t]ail -c [+][0-9]* -f {folder}/{OUTPUT_FILE}' || true").strip())
    pids = host.sh(f"pgrep -f '[t]ail -c [+][0-9]* -f {folder}/{OUTPUT_FILE}'").split()
    host.sh("kill -STOP " + " ".join(pids))
    try:
        # Nobody reads: not the tail, not the ingester. The container ends anyway.
        assert host.sh(f"docker wait {container.name}").strip() == "0"
        assert host.sh(f"wc -c < {folder}/{OUTPUT_FILE}").strip() != "0"
    finally:
        host.sh("kill -CONT " + " ".join(pids) + " 2>/dev/null; true")
    store, execution = one_execution(db_url)
    ingester = followed(store, execution.id, container)  # type: ignore[arg-type]
    assert container.wait(120) == 0
    assert ingester.close(120)
    assert stored_texts(store, execution.id, "stdout") == [str(i) for i in range(1, lines + 1)]  # type: ignore[arg-type]
    assert stored_texts(store, execution.id, "stderr") == ["done"]  # type: ignore[arg-type]


def test_connections_cut_mid_stream_lose_and_repeat_no_line(host: Host, db_url: str) -> None:
    from test_logs import one_execution

    store, execution = one_execution(db_url)
    container = host.runtime.start(host.spec(COUNT))
    ingester = followed(store, execution.id, container)  # type: ignore[arg-type]
    for cut_after in (60, 150, 250):
        wait_for("output", lambda n=cut_after: store.command_lines(execution.id)["stdout"] >= n)  # type: ignore[arg-type,misc]
        host.host.kill_sessions()  # every SSH connection to the host is cut
    assert container.wait(60) == 0
    assert ingester.close(60)
    assert stored_texts(store, execution.id, "stdout") == EXPECTED_OUT  # type: ignore[arg-type]
    assert stored_texts(store, execution.id, "stderr") == EXPECTED_ERR  # type: ignore[arg-type]


@pytest.mark.parametrize("exits_meanwhile", [False, True])
def test_a_daemon_that_re_attaches_stores_each_line_once(host: Host, db_url: str, exits_meanwhile: bool) -> None:
    """The first follower stops mid-stream with some lines stored (its daemon killed); the next one
    re-attaches (RemoteDockerRuntime.attach), reads the relay's file again and skips the command's
    lines stored already (not vh-orch's note), while the container runs on or after it exited with
    nobody following."""
    from test_logs import one_execution

    store, execution = one_execution(db_url)
    first = LogIngester(store, execution.id)  # type: ignore[arg-type]
    spec = host.spec(COUNT)
    container = host.runtime.start(spec)
    first.follow(container.stdout, "stdout", timestamped=True)
    first.follow(container.stderr, "stderr", timestamped=True)
    first.add("stderr", "vh-orch: a note of its own")
    wait_for("stored output", lambda: store.command_lines(execution.id)["stdout"] >= 50)  # type: ignore[arg-type]
    first.let_go()
    container.release()
    first.close(timeout=0.2)
    if exits_meanwhile:
        assert host.sh(f"docker wait {container.name}").strip() == "0"
    stored = store.command_lines(execution.id)  # type: ignore[arg-type]
    assert 0 < stored["stdout"] < len(EXPECTED_OUT) or exits_meanwhile
    second = LogIngester(store, execution.id)  # type: ignore[arg-type]
    again = host.runtime.attach(spec)
    assert again is not None
    second.follow(again.stdout, "stdout", timestamped=True, skip=stored["stdout"])
    second.follow(again.stderr, "stderr", timestamped=True, skip=stored["stderr"])
    assert again.wait(60) == 0
    assert second.close(60)
    assert stored_texts(store, execution.id, "stdout") == EXPECTED_OUT  # type: ignore[arg-type]
    errs = stored_texts(store, execution.id, "stderr")  # type: ignore[arg-type]
    assert [t for t in errs if t.startswith("err")] == EXPECTED_ERR
    assert errs.count("vh-orch: a note of its own") == 1


def test_a_launch_cut_on_the_host_after_the_creation_is_settled(host: Host) -> None:
    """The launcher is SIGKILLed right after it created the container, before the start: the daemon
    that follows finds its launch cut, removes the container that never ran, and says so."""
    from vh_orch.bootstrap import remote_logs

    spec = host.spec("echo must never run")
    folder = host.runtime.remote_folder(spec)
    # The launch as RemoteDockerRuntime.start makes it, its `docker create` followed by the launcher's death.
    create = ["sh", "-c", f'docker create --pull never --name {spec.container_name} '
                          f'--label vh-orch.attempt=1 {BUSYBOX} echo must never run >/dev/null; '
                          f'kill -KILL "$(ls "$0/{LAUNCH_DIR}" | sed -n "s/^pid[.]//p")"', folder]
    said = host.transport.run(remote_logs.launch_command(folder, create), timeout=120)
    assert said.code != 0 and "cut" in said.stderr
    assert host.sh(f"docker inspect --format '{{{{.State.Status}}}}' {spec.container_name}").strip() == "created"
    # A daemon that re-attaches (its predecessor died waiting) settles it.
    container = host.runtime.attach(spec)
    assert container is not None
    container.wait(60)
    assert container.never_started
    assert host.transport.run(f"docker inspect {spec.container_name}").code != 0  # removed
    assert container.stdout.read() == b""


def test_a_launch_that_fails_says_why_and_leaves_nothing_running(host: Host) -> None:
    from vh_orch.bootstrap.runtimes import RuntimeFailure

    import dataclasses

    spec = dataclasses.replace(host.spec("echo x"), image="vh-orch/no-such-image:never")
    with pytest.raises(RuntimeFailure, match="no-such-image"):
        host.runtime.start(spec)
    assert host.transport.run(f"docker inspect {spec.container_name}").code != 0


def test_a_stopped_daemons_follower_leaves_no_process_on_the_host(host: Host) -> None:
    """A follower whose connection is gone ends on the host too once the relay has ended (no `tail -f`
    left behind for every re-attach)."""
    spec = host.spec("sleep 2; echo bye")
    container = host.runtime.start(spec)
    folder = host.runtime.remote_folder(spec)
    wait_for("the follower's tail", lambda: host.sh(f"pgrep -f '[t]ail -c [+][0-9]* -f {folder}/' || true").strip())
    container.release()
    host.host.kill_sessions()
    host.sh(f"docker wait {container.name}")
    wait_for("the tail to end", lambda: not host.sh(f"pgrep -f '[t]ail -c [+][0-9]* -f {folder}/' || true").strip())
    pid = host.sh(f"ls {folder}/{LAUNCH_DIR} | sed -n 's/^pid[.]//p'").strip()
    wait_for("the relay to end", lambda: host.transport.run(f"kill -0 {pid}").code != 0)


def test_a_relay_file_cut_short_by_a_full_disk_is_filled_from_dockers_log(ssh_pool: SSHPool, docker_images: None,
                                                                          tmp_path: Path, db_url: str) -> None:
    """The attempt's folder is on a disk too small for the output (the command's outputs may fill
    the same disk): the relay stops writing, and the rest comes from Docker's own log, every line
    once."""
    import subprocess

    from test_logs import one_execution

    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    h = Host(ssh_pool, disk)
    try:
        lines = 200_000  # about 1.3 MB of output: past the disk's 1 MB
        spec = h.spec(f"seq 1 {lines}; echo tail >&2")
        container = h.runtime.start(spec)
        store, execution = one_execution(db_url)
        ingester = followed(store, execution.id, container)  # type: ignore[arg-type]
        assert container.wait(120) == 0
        assert ingester.close(120)
        assert container.problem is None
        # The relay did stop short: its dial-stdio could not write on.
        said = h.sh(f"ls {h.runtime.remote_folder(spec)}/{LAUNCH_DIR}")
        assert "relayed." in said and "relayed.0" not in said.split()
        assert stored_texts(store, execution.id, "stdout") == [str(i) for i in range(1, lines + 1)]  # type: ignore[arg-type]
        assert stored_texts(store, execution.id, "stderr") == ["tail"]  # type: ignore[arg-type]
    finally:
        h.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_launch_cut_on_the_host_after_the_start_is_followed_from_dockers_log(host: Host, db_url: str) -> None:
    """The launcher died after it started the container and before it said so (nor did its relay
    write anything): the container ran, so it is followed on, every line from Docker's own log."""
    from test_logs import one_execution

    spec = host.spec("unused")
    folder = host.runtime.remote_folder(spec)
    host.sh(f"mkdir -p {folder}/{LAUNCH_DIR} && : > {folder}/{LAUNCH_DIR}/pid.999999999 && "
            f"docker run -d --pull never --name {spec.container_name} --label vh-orch.attempt=1 {BUSYBOX} "
            f"sh -c '{COUNT}; exit 5' >/dev/null")
    store, execution = one_execution(db_url)
    container = host.runtime.attach(spec)
    assert container is not None
    ingester = followed(store, execution.id, container)  # type: ignore[arg-type]
    assert container.wait(120) == 5
    assert ingester.close(60)
    assert not container.never_started and container.problem is None
    assert stored_texts(store, execution.id, "stdout") == EXPECTED_OUT  # type: ignore[arg-type]
    assert stored_texts(store, execution.id, "stderr") == EXPECTED_ERR  # type: ignore[arg-type]


def test_a_relay_killed_mid_stream_is_filled_from_dockers_log(host: Host, db_url: str) -> None:
    """The relay's reader of the attach (dial-stdio) is SIGKILLed on the host while the container
    runs: the container goes on, and the lines the file lacks come from Docker's own log, once."""
    from test_logs import one_execution

    store, execution = one_execution(db_url)
    spec = host.spec(COUNT)
    container = host.runtime.start(spec)
    ingester = followed(store, execution.id, container)  # type: ignore[arg-type]
    wait_for("stored output", lambda: store.command_lines(execution.id)["stdout"] >= 50)  # type: ignore[arg-type]
    folder = host.runtime.remote_folder(spec)
    relay = host.sh(f"ls {folder}/{LAUNCH_DIR} | sed -n 's/^pid[.]//p'").strip()
    host.sh(f"kill -KILL $(pgrep -P {relay} -f 'docker system dial-stdio')")
    assert container.wait(60) == 0
    assert ingester.close(60)
    assert container.problem is None
    assert stored_texts(store, execution.id, "stdout") == EXPECTED_OUT  # type: ignore[arg-type]
    assert stored_texts(store, execution.id, "stderr") == EXPECTED_ERR  # type: ignore[arg-type]
