"""The `aws` cloud end to end: `vh-orch serve` against moto's EC2 and S3 over HTTP.

moto's instances get addresses nobody may dial; the environment's endpoint resolver
(tests/resolvers/vh_test_resolvers.py) maps each instance to one of the loopback sshd
hosts, which share this machine's Docker engine. Everything else is the real path:
launch with tags, adoption, bootstrap over SSH, detached containers, log streaming,
retirement and termination.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import BUSYBOX, SSHPool, VhOrch, make_project
from test_ssh_pool import logs

REGION = "eu-west-1"
STEPS = f"""
- step:
    name: work
    image: {BUSYBOX}
    command:
      - for i in $(seq 1 {{parameter-value:lines}}); do echo "line $i"; sleep {{parameter-value:pause}}; done
      - echo "result of $VH_EXECUTION_ID" > /valohai/outputs/result.txt
    parameters:
      - name: lines
        type: integer
        default: 2
      - name: pause
        type: float
        default: 0.2
"""


def aws_env(moto, pool: SSHPool, tmp_path: Path, **extra) -> str:  # type: ignore[no-untyped-def]
    entry = {
        "name": "aws-cpu", "cloud": "aws", "region": REGION, "instance_type": "t3.micro", "max_scale": 3,
        "idle_timeout": "3s", "price_per_hour": 0.0104, "pull_policy": "never",
        "aws": {"ami": moto.default_ami(), "zones": [f"{REGION}a", f"{REGION}b"], "endpoint_url": moto.url},
        "ssh": {"user": "root", "private_key_file": str(pool.client_key), "connect_timeout": "3s",
                "endpoint_resolver": "vh_test_resolvers:test_host", "workdir": str(tmp_path / "workdir")},
    }
    entry.update(extra)
    path = tmp_path / "aws.yaml"
    path.write_text(json.dumps({"environments": [entry]}))
    return str(path)


@pytest.fixture
def aws_vh(vh: VhOrch, tmp_path: Path, moto, ssh_pool: SSHPool, docker_images: None) -> VhOrch:  # type: ignore[no-untyped-def]
    vh.env["VH_TEST_SSH_HOSTS"] = json.dumps(
        [{"host": h.address, "port": h.port, "host_key": h.host_key} for h in ssh_pool.hosts])
    vh("env", "apply", aws_env(moto, ssh_pool, tmp_path))
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", STEPS)  # type: ignore[attr-defined]
    return vh


def submit(vh: VhOrch, *args: str) -> int:
    return vh.run_json("work", *args, "--project", "p", "--adhoc",  # type: ignore[attr-defined]
                       str(vh.project_dir), "--env", "aws-cpu")["id"]  # type: ignore[attr-defined]


def live(moto) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    reservations = moto.client("ec2").describe_instances()["Reservations"]
    return [i for r in reservations for i in r["Instances"] if i["State"]["Name"] in ("pending", "running")]


def test_ten_executions_scale_to_three_machines_and_nothing_is_left_running(aws_vh: VhOrch, moto) -> None:  # type: ignore[no-untyped-def]
    ids = [submit(aws_vh) for _ in range(10)]
    aws_vh.start_daemon()
    most = 0
    deadline = time.monotonic() + 240
    while True:
        most = max(most, len(live(moto)))
        infos = [aws_vh.json("exec", "info", str(i), "--json") for i in ids]
        if all(i["status"] in ("complete", "error", "stopped") for i in infos):
            break
        assert time.monotonic() < deadline, [i["status"] for i in infos]
        time.sleep(0.5)
    assert [i["status"] for i in infos] == ["complete"] * 10, [(i["status"], i["status_reason"]) for i in infos]
    assert most == 3, "10 waiting executions scale the environment to its max_scale"
    for info in infos:
        assert logs(aws_vh, info["id"], "stdout") == ["line 1", "line 2"]
        assert [o["name"] for o in info["outputs"]] == ["result.txt"]
    assert len({i["machine"] for i in infos}) == 3
    # Idle for 3 s: every machine is retired and its instance terminated.
    deadline = time.monotonic() + 60
    while live(moto) or any(m["state"] != "terminated" for m in aws_vh.json("machine", "list", "--all")
                            if m["environment"] == "aws-cpu"):
        assert time.monotonic() < deadline, (live(moto), aws_vh.json("machine", "list", "--all"))
        time.sleep(0.5)
    status = aws_vh.json("status", "--json")
    assert [r["cost_per_hour"] for r in status if r["environment"] == "aws-cpu"] == [0]


def test_an_instance_terminated_while_running_requeues_and_completes_elsewhere(aws_vh: VhOrch, moto) -> None:  # type: ignore[no-untyped-def]
    eid = submit(aws_vh, "-p", "lines=40", "-p", "pause=0.25")
    aws_vh.start_daemon()
    deadline = time.monotonic() + 60
    while len(logs(aws_vh, eid, "stdout")) < 3:
        assert time.monotonic() < deadline, (aws_vh.json("exec", "info", str(eid), "--json"), aws_vh.json("machine", "list", "--all"), logs(aws_vh, eid, "stderr"))
        time.sleep(0.2)
    first = aws_vh.json("exec", "info", str(eid), "--json")["machine"]
    (instance,) = live(moto)
    moto.client("ec2").terminate_instances(InstanceIds=[instance["InstanceId"]])  # a spot reclaim, say
    info = aws_vh.wait(eid, timeout=180)
    assert info["status"] == "complete", info
    assert info["attempt"] == 2 and info["machine"] != first
    machines = {m["id"]: m for m in aws_vh.json("machine", "list", "--all")}
    assert machines[first]["state"] == "lost"
    assert "terminated" in machines[first]["reason"]
    out = logs(aws_vh, eid, "stdout")
    assert out[-40:] == [f"line {n}" for n in range(1, 41)], "attempt 2 ran the whole command"
