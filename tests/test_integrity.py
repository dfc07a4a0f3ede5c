"""Correct under real conditions: installations that never touch each other, `complete` means
every line, big inputs streamed with bounded memory, hosts without SFTP.

Real parts throughout: the Docker engine, sshd hosts on loopback, `vh-orch serve` subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BUSYBOX, SSHPool, VhOrch, eventually, installation, make_project

STEPS = f"""
- step:
    name: count
    image: {BUSYBOX}
    command:
      - >-
        for i in $(seq 1 {{parameter-value:lines}}); do echo "line $i"; echo "err $i" >&2; sleep {{parameter-value:pause}}; done
      - echo result > /valohai/outputs/result.txt
    parameters:
      - name: lines
        type: integer
        default: 5
      - name: pause
        type: float
        default: 0
- step:
    name: digest
    image: {BUSYBOX}
    command:
      - sha256sum /valohai/inputs/data/*
      - wc -c /valohai/inputs/data/*
    inputs:
      - name: data
"""


def log_texts(vh: VhOrch, execution_id: int, stream: str = "stdout") -> list[str]:
    out = vh("exec", "logs", str(execution_id), "--json").stdout
    events = [json.loads(line) for line in out.splitlines()]
    return [e["text"] for e in events if e["kind"] == "log" and e["stream"] == stream]


def wait_for_lines(vh: VhOrch, execution_id: int, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(log_texts(vh, execution_id)) < n:
        assert time.monotonic() < deadline, f"execution {execution_id} printed fewer than {n} lines"
        time.sleep(0.2)


def submit(vh: VhOrch, *args: str) -> int:
    return vh.run_json(*args, "--project", "p", "--adhoc", str(vh.project_dir))["id"]  # type: ignore[attr-defined]


@pytest.fixture
def other_vh(tmp_path: Path) -> Iterator[VhOrch]:
    """A second installation on the same machine: its own home, database and cluster id."""
    with installation(tmp_path / "other" / "home") as cli:
        yield cli


def prepare(vh: VhOrch, tmp_path: Path, name: str) -> None:
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, name, STEPS)  # type: ignore[attr-defined]


def pool_file(pool: SSHPool, folder: Path, hosts: list[int], **ssh: object) -> Path:
    entries = [{"address": pool.hosts[n].address, "host_key": pool.hosts[n].host_key,
                "workdir": str(folder / f"workdir{n}")} for n in hosts]
    doc = {"environments": [{"name": "onprem", "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never",
                             "ssh": {"user": "root", "private_key_file": str(pool.client_key),
                                     "connect_timeout": "3s", "hosts": entries, **ssh}}]}
    path = folder / "pool.yaml"
    path.write_text(json.dumps(doc))
    return path


# -- two installations side by side ----------------------------------------------------------


def test_two_installations_on_one_engine_never_touch_each_others_containers(
    vh: VhOrch, other_vh: VhOrch, tmp_path: Path, docker_images: None
) -> None:
    for cli, name in ((vh, "a"), (other_vh, "b")):
        cli("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        prepare(cli, tmp_path, name)
        cli.start_daemon()
    assert vh.cluster_id() != other_vh.cluster_id()
    # Mine would run for minutes: it is still running whatever the restart below costs under load.
    mine = submit(vh, "count", "-p", "lines=3000", "-p", "pause=0.1")
    theirs = submit(other_vh, "count", "-p", "lines=60", "-p", "pause=0.1")
    assert mine == theirs == 1, "both number their executions from 1"
    wait_for_lines(vh, mine, 5)
    wait_for_lines(other_vh, theirs, 5)
    # A daemon killed and restarted ends what it left running: only its own.
    vh.stop_daemon(signal.SIGKILL)
    vh.start_daemon()
    assert vh.wait(mine, timeout=60)["status"] == "error"
    info = other_vh.wait(theirs, timeout=90)
    assert info["status"] == "complete", info
    assert log_texts(other_vh, theirs) == [f"line {n}" for n in range(1, 61)]
    assert log_texts(other_vh, theirs, "stderr") == [f"err {n}" for n in range(1, 61)]
    assert vh.containers() == [] and other_vh.containers() == []


def test_two_installations_share_an_ssh_host_with_their_own_workdirs(
    vh: VhOrch, other_vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None
) -> None:
    for cli, name in ((vh, "a"), (other_vh, "b")):
        folder = tmp_path / f"pool-{name}"
        folder.mkdir()
        cli("env", "apply", str(pool_file(ssh_pool, folder, [0])))
        prepare(cli, tmp_path, name)
        cli.start_daemon()
    mine = submit(vh, "count", "--env", "onprem", "-p", "lines=80", "-p", "pause=0.05")
    theirs = submit(other_vh, "count", "--env", "onprem", "-p", "lines=80", "-p", "pause=0.05")
    wait_for_lines(vh, mine, 5)
    wait_for_lines(other_vh, theirs, 5)
    vh.stop_daemon(signal.SIGKILL)
    vh.start_daemon()  # re-attaches to its own container; the other installation's runs on
    for cli, eid in ((vh, mine), (other_vh, theirs)):
        info = cli.wait(eid, timeout=120)
        assert info["status"] == "complete", info
        assert log_texts(cli, eid) == [f"line {n}" for n in range(1, 81)]
        assert [o["name"] for o in info["outputs"]] == ["result.txt"]
    eventually("both installations' containers to be removed", lambda: vh.containers() == other_vh.containers() == [])
    # Each installation's files live under its own cluster folder in its own workdir (removed by the
    # same command as the container, just after it).
    for cli, name in ((vh, "a"), (other_vh, "b")):
        executions = tmp_path / f"pool-{name}" / "workdir0" / str(cli.cluster_id()) / "executions"
        assert executions.is_dir()
        eventually(f"installation {name}'s execution folders to be removed", lambda e=executions: not list(e.iterdir()))


# -- `complete` means every line ------------------------------------------------------------------


def test_a_container_removed_behind_vh_orchs_back_is_an_error_never_complete(
    vh: VhOrch, tmp_path: Path, docker_images: None
) -> None:
    vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
    prepare(vh, tmp_path, "proj")
    vh.start_daemon()
    eid = submit(vh, "count", "-p", "lines=600", "-p", "pause=0.05")
    wait_for_lines(vh, eid, 5)
    subprocess.run(["docker", "rm", "-f", f"{vh.cluster_id()}-exec-{eid}"], check=True, capture_output=True)
    info = vh.wait(eid, timeout=60)
    assert info["status"] == "error", info
    assert "vanished" in info["status_reason"] and info["outputs"] == []


def test_a_remote_container_removed_behind_vh_orchs_back_is_an_error_never_complete(
    vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None
) -> None:
    vh("env", "apply", str(pool_file(ssh_pool, tmp_path, [0])))
    prepare(vh, tmp_path, "proj")
    vh.start_daemon()
    eid = submit(vh, "count", "--env", "onprem", "-p", "lines=600", "-p", "pause=0.05")
    wait_for_lines(vh, eid, 5)
    subprocess.run(["docker", "rm", "-f", f"{vh.cluster_id()}-exec-{eid}"], check=True, capture_output=True)
    info = vh.wait(eid, timeout=60)
    assert info["status"] == "error", info
    assert "vanished" in info["status_reason"] and info["outputs"] == []


# -- big inputs, streamed ------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_300_mb_input_reaches_a_fresh_host_streamed_with_bounded_memory(
    vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None
) -> None:
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, not all zeros
    with big.open("wb") as fh:
        for i in range(300):
            chunk = i.to_bytes(4, "big") + block[4:]
            digest.update(chunk)
            fh.write(chunk)
    vh("env", "apply", str(pool_file(ssh_pool, tmp_path, [0])))  # a new workdir: nothing cached there
    prepare(vh, tmp_path, "proj")
    vh.start_daemon()
    assert vh.daemon is not None
    eid = submit(vh, "digest", "--env", "onprem", "-i", f"data={big}")
    info = vh.wait(eid, timeout=300)
    assert info["status"] == "complete", info
    out = log_texts(vh, eid)
    assert out[0].split()[0] == digest.hexdigest()
    assert out[1].split()[0] == str(300 << 20)
    # The daemon never held the input (or the bundle) in memory: its peak stays far below the input's size.
    assert peak_rss_mb(vh.daemon.pid) < 200, f"the daemon's peak RSS was {peak_rss_mb(vh.daemon.pid):.0f} MB"


def test_a_host_without_an_sftp_subsystem_runs_executions(
    vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None
) -> None:
    import sshhosts

    host = sshhosts.make_host(tmp_path / "nosftp", 9, ssh_pool.net)
    host.start(ssh_pool.client_public, sftp=False)
    try:
        doc = {"environments": [{"name": "bare", "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never",
                                 "ssh": {"user": "root", "private_key_file": str(ssh_pool.client_key),
                                         "connect_timeout": "3s",
                                         "hosts": [{"address": host.address, "host_key": host.host_key,
                                                    "workdir": str(tmp_path / "bare-workdir")}]}}]}
        (tmp_path / "bare.yaml").write_text(json.dumps(doc))
        vh("env", "apply", str(tmp_path / "bare.yaml"))
        prepare(vh, tmp_path, "proj")
        vh.start_daemon()
        eid = submit(vh, "count", "--env", "bare", "-p", "lines=3")
        info = vh.wait(eid, timeout=120)
        assert info["status"] == "complete", info
        assert log_texts(vh, eid) == ["line 1", "line 2", "line 3"]
    finally:
        if vh.daemon is not None:
            vh.stop_daemon()
        host.stop()
