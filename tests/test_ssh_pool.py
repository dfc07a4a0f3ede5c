"""The `ssh` cloud end to end: two sshd hosts on loopback sharing this machine's Docker engine."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from conftest import BUSYBOX, SSHPool, VhOrch, make_project

STEPS = f"""
- step:
    name: count
    image: {BUSYBOX}
    command:
      - >-
        for i in $(seq 1 {{parameter-value:lines}}); do echo "line $i"; echo "err $i" >&2; sleep {{parameter-value:pause}}; done
      - >-
        echo '{{"done": 1}}'
      - echo result > /valohai/outputs/result.txt
    parameters:
      - name: lines
        type: integer
        default: 5
      - name: pause
        type: float
        default: 0
- step:
    name: echo
    image: {BUSYBOX}
    command: printf '%s\\n' {{parameter-value:text}}
    parameters:
      - name: text
        type: string
"""


def pool_yaml(pool: SSHPool, tmp_path: Path, hosts: list[dict]) -> str:  # type: ignore[type-arg]
    entries = []
    for i, h in enumerate(hosts):
        workdir = tmp_path / f"workdir{i}"
        entries.append({"address": h["address"], "port": 22, "host_key": h["host_key"], "workdir": str(workdir)})
    doc = {"environments": [{
        "name": "onprem", "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never",
        "ssh": {"user": "root", "private_key_file": str(pool.client_key), "connect_timeout": "3s",
                "hosts": entries},
    }]}
    path = tmp_path / "pool.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return str(path)


def both_hosts(pool: SSHPool) -> list[dict]:  # type: ignore[type-arg]
    return [{"address": h.address, "host_key": h.host_key} for h in pool.hosts]


@pytest.fixture
def pool_vh(vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None) -> VhOrch:
    vh("env", "apply", pool_yaml(ssh_pool, tmp_path, both_hosts(ssh_pool)))
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", STEPS)  # type: ignore[attr-defined]
    vh.pool = ssh_pool  # type: ignore[attr-defined]
    vh.start_daemon()
    return vh


def submit(vh: VhOrch, *args: str) -> int:
    return vh.run_json(*args, "--project", "p", "--adhoc", str(vh.project_dir), "--env", "onprem")["id"]  # type: ignore[attr-defined]


def logs(vh: VhOrch, execution_id: int, stream: str) -> list[str]:
    out = vh("exec", "logs", str(execution_id), "--json").stdout
    events = [json.loads(line) for line in out.splitlines()]
    return [e["text"] for e in events if e["kind"] == "log" and e["stream"] == stream]


def test_four_executions_complete_on_both_hosts(pool_vh: VhOrch) -> None:
    ids = [submit(pool_vh, "count", "-p", "lines=3", "-p", "pause=0.5") for _ in range(4)]
    infos = [pool_vh.wait(i, timeout=120) for i in ids]
    assert [i["status"] for i in infos] == ["complete"] * 4, infos
    machines = {m["id"]: m for m in pool_vh.json("machine", "list", "--all")}
    hosts = {machines[i["machine"]]["instance_id"] for i in infos}
    assert hosts == {f"{h.address}:22" for h in pool_vh.pool.hosts}  # type: ignore[attr-defined]
    for info in infos:
        assert logs(pool_vh, info["id"], "stdout") == ["line 1", "line 2", "line 3", '{"done": 1}']
        assert logs(pool_vh, info["id"], "stderr") == ["err 1", "err 2", "err 3"]
        assert info["metadata_latest"] == {"done": 1}
        assert [o["name"] for o in info["outputs"]] == ["result.txt"]
    steps = {m["bootstrap_step"] for m in machines.values()}
    assert steps == {"ready"}


HOSTILE = ["; touch /tmp/vh-pwned", "$(touch /tmp/vh-pwned)", "`touch /tmp/vh-pwned`", "a\ntouch /tmp/vh-pwned",
           "'\"\\ $HOME"]


def test_hostile_values_arrive_in_the_container_as_literal_text(pool_vh: VhOrch) -> None:
    """All at once on one pool: each value is a parameter of its own execution."""
    Path("/tmp/vh-pwned").unlink(missing_ok=True)
    ids = {hostile: submit(pool_vh, "echo", "-p", f"text={hostile}") for hostile in HOSTILE}
    for hostile, eid in ids.items():
        info = pool_vh.wait(eid, timeout=120)
        assert info["status"] == "complete", (hostile, info)
        assert "\n".join(logs(pool_vh, eid, "stdout")) == hostile
    assert not Path("/tmp/vh-pwned").exists()


def test_a_daemon_killed_mid_run_loses_and_repeats_no_line(pool_vh: VhOrch) -> None:
    ids = [submit(pool_vh, "count", "-p", "lines=150", "-p", "pause=0.02") for _ in range(2)]
    deadline = time.monotonic() + 60
    while not all(len(logs(pool_vh, i, "stdout")) > 10 for i in ids):
        assert time.monotonic() < deadline, "the executions did not start"
        time.sleep(0.2)
    pool_vh.stop_daemon(signal.SIGKILL)
    time.sleep(1)
    pool_vh.start_daemon()
    for i in ids:
        info = pool_vh.wait(i, timeout=120)
        assert info["status"] == "complete", info
        assert logs(pool_vh, i, "stdout") == [f"line {n}" for n in range(1, 151)] + ['{"done": 1}']
        assert logs(pool_vh, i, "stderr") == [f"err {n}" for n in range(1, 151)]


def test_a_connection_cut_mid_stream_resumes(pool_vh: VhOrch, ssh_pool: SSHPool) -> None:
    eid = submit(pool_vh, "count", "-p", "lines=100", "-p", "pause=0.03")
    deadline = time.monotonic() + 60
    while len(logs(pool_vh, eid, "stdout")) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for host in ssh_pool.hosts:
        host.kill_sessions()
    info = pool_vh.wait(eid, timeout=120)
    assert info["status"] == "complete", info
    assert logs(pool_vh, eid, "stdout") == [f"line {n}" for n in range(1, 101)] + ['{"done": 1}']


def test_a_host_whose_key_does_not_match_is_never_used(vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool,
                                                       docker_images: None) -> None:
    impostor = [{"address": ssh_pool.hosts[0].address, "host_key": ssh_pool.hosts[1].host_key}]
    vh("env", "apply", pool_yaml(ssh_pool, tmp_path, impostor))
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", STEPS)  # type: ignore[attr-defined]
    vh.start_daemon()
    eid = submit(vh, "count")
    deadline = time.monotonic() + 30
    while not [m for m in vh.json("machine", "list", "--all") if m["state"] == "failed"]:
        assert time.monotonic() < deadline, "no machine failed"
        time.sleep(0.3)
    time.sleep(2)
    assert vh.json("exec", "info", str(eid))["status"] == "queued"
    failed = [m for m in vh.json("machine", "list", "--all") if m["state"] == "failed"]
    assert f"the host key of {ssh_pool.hosts[0].address}:22 did not match" in failed[0]["reason"]
    failures = vh.json("env", "show", "onprem")["launch_failures"]
    assert "did not match" in failures[0]["message"]
    vh("exec", "stop", str(eid))


def test_an_unreachable_host_is_skipped_and_the_execution_runs_on_the_other(
    vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None
) -> None:
    hosts = [{"address": ssh_pool.spare(9), "host_key": ssh_pool.hosts[0].host_key},
             {"address": ssh_pool.hosts[1].address, "host_key": ssh_pool.hosts[1].host_key}]
    vh("env", "apply", pool_yaml(ssh_pool, tmp_path, hosts))
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", STEPS)  # type: ignore[attr-defined]
    vh.start_daemon()
    info = vh.wait(submit(vh, "count"), timeout=120)
    assert info["status"] == "complete", info
    machines = {m["id"]: m for m in vh.json("machine", "list", "--all")}
    assert machines[info["machine"]]["instance_id"] == f"{ssh_pool.hosts[1].address}:22"
    unreachable = [m for m in machines.values() if m["zone"] == f"{ssh_pool.spare(9)}:22"]
    assert unreachable and "unreachable" in unreachable[0]["reason"]
