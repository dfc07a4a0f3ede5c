"""The `aws` cloud end to end: `vh-orch serve` against moto's EC2 and S3 over HTTP.

moto's instances get addresses nobody may dial; the environment's endpoint resolver
(tests/resolvers/vh_test_resolvers.py) maps each instance to one of the loopback sshd
hosts, which share this machine's Docker engine. Everything else is the real path:
launch with tags, adoption, bootstrap over SSH, detached containers, log streaming,
retirement and termination.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
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
- step:
    name: data
    image: {BUSYBOX}
    command:
      - cat /valohai/config/inputs.json; echo
      - sha256sum /valohai/inputs/data/*
      - dd if=/dev/urandom of=/valohai/outputs/big.bin bs=1048576 count=11 2>/dev/null
      - mkdir -p /valohai/outputs/sub && echo small > "/valohai/outputs/sub/it's small.txt"
    inputs:
      - name: data
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


def every_instance(moto) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    """Every instance moto knows of, terminated ones included: the cloud's own launch history."""
    reservations = moto.client("ec2").describe_instances()["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def peak(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans that overlap at one instant (one that ends as another starts does not count)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_ten_executions_scale_to_three_machines_and_nothing_is_left_running(aws_vh: VhOrch, moto) -> None:  # type: ignore[no-untyped-def]
    ids = [submit(aws_vh) for _ in range(10)]
    aws_vh.start_daemon()
    # Only wait here: how many machines there were is read afterwards from what was stored (rows,
    # timestamps, the cloud's history), never sampled between slow CLI calls.
    deadline = time.monotonic() + 240
    while True:
        rows = [e for e in aws_vh.json("exec", "list", "--project", "p") if e["id"] in ids]
        if len(rows) == 10 and all(e["status"] in ("complete", "error", "stopped") for e in rows):
            break
        assert time.monotonic() < deadline, [e["status"] for e in rows]
        time.sleep(0.5)
    infos = [aws_vh.json("exec", "info", str(i)) for i in ids]
    assert [i["status"] for i in infos] == ["complete"] * 10, [(i["status"], i["status_reason"]) for i in infos]
    for info in infos:
        assert logs(aws_vh, info["id"], "stdout") == ["line 1", "line 2"]
        assert [o["name"] for o in info["outputs"]] == ["result.txt"]
    used = {i["machine"] for i in infos}
    assert len(used) == 3
    # Idle for 3 s: every machine is retired and its instance terminated.
    deadline = time.monotonic() + 60
    while live(moto) or any(m["state"] != "terminated" for m in aws_vh.json("machine", "list", "--all")
                            if m["environment"] == "aws-cpu"):
        assert time.monotonic() < deadline, (live(moto), aws_vh.json("machine", "list", "--all"))
        time.sleep(0.5)
    # 10 waiting executions scale the environment to its max_scale, 3, and no further: three machine
    # rows were ever written, all three alive at once, and they are the ones the executions ran on.
    machines = [m for m in aws_vh.json("machine", "list", "--all") if m["environment"] == "aws-cpu"]
    assert len(machines) == 3 and {m["id"] for m in machines} == used, machines
    assert peak([(stamp(m["created_at"]), stamp(m["state_changed_at"])) for m in machines]) == 3
    # The cloud agrees: exactly those three instances were ever launched, and all are terminated.
    instances = every_instance(moto)
    assert sorted(i["InstanceId"] for i in instances) == sorted(m["instance_id"] for m in machines)
    assert {i["State"]["Name"] for i in instances} == {"terminated"}
    # One execution at a time per machine, so never more running at once than machines.
    spans = [(stamp(i["started_at"]), stamp(i["ended_at"]), i["machine"]) for i in infos]
    for machine in used:
        assert peak([(start, end) for start, end, m in spans if m == machine]) == 1
    assert peak([(start, end) for start, end, _ in spans]) <= 3
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


BUCKET = "vh-data"


def datastore(moto) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {"uri": f"s3://{BUCKET}/runs", "endpoint_url": moto.url, "region": REGION, "multipart_threshold_mb": 5}


def s3_bytes(moto, uri: str) -> bytes:  # type: ignore[no-untyped-def]
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return moto.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_inputs_and_outputs_move_between_the_machine_and_s3_directly(
        vh: VhOrch, tmp_path: Path, moto, ssh_pool: SSHPool, docker_images: None) -> None:  # type: ignore[no-untyped-def]
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key="inputs/data.csv", Body=b"a,b\n1,2\n")
    vh.env["VH_TEST_SSH_HOSTS"] = json.dumps(
        [{"host": h.address, "port": h.port, "host_key": h.host_key} for h in ssh_pool.hosts])
    vh("env", "apply", aws_env(moto, ssh_pool, tmp_path, datastore=datastore(moto)))
    vh("project", "add", "p")
    project = make_project(tmp_path, "proj", STEPS)
    vh.start_daemon()
    first = vh.run_json("data", "--project", "p", "--adhoc", str(project), "--env", "aws-cpu",
                        "-i", f"data=s3://{BUCKET}/inputs/data.csv")["id"]
    info = vh.wait(first, timeout=180)
    assert info["status"] == "complete", info
    out = logs(vh, first, "stdout")
    checksum_line = next(i for i, line in enumerate(out) if line.endswith("  /valohai/inputs/data/data.csv"))
    inputs_json = json.loads("\n".join(out[:checksum_line]))
    (entry,) = inputs_json["data"]["files"]
    expected = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert entry["size"] == 8 and entry["checksums"]["sha256"] == expected
    assert f"{expected}  /valohai/inputs/data/data.csv" in out
    outputs = {o["name"]: o for o in info["outputs"]}
    assert set(outputs) == {"big.bin", "sub/it's small.txt"}
    for output in outputs.values():
        assert output["uri"].startswith(f"s3://{BUCKET}/runs/")
        body = s3_bytes(moto, output["uri"])
        assert len(body) == output["size"] and hashlib.sha256(body).hexdigest() == output["sha256"]
    assert outputs["big.bin"]["size"] == 11 * 1024 * 1024
    # The bytes moved between the machine (curl) and S3; the daemon (boto3) only signed and completed.
    puts = [s for s in moto.proxy.log if s.method == "PUT" and "/runs/" in s.path]
    assert puts and all(s.user_agent.startswith("curl/") for s in puts)
    assert sum("uploadId" in s.path for s in puts) == 3, "11 MiB in 5 MiB parts"
    gets = [s for s in moto.proxy.log if s.method == "GET" and "inputs/data.csv" in s.path]
    assert gets and all(s.user_agent.startswith("curl/") for s in gets)

    # An output of one execution is the input of the next, through datum://, again directly.
    second = vh.run_json("data", "--project", "p", "--adhoc", str(project), "--env", "aws-cpu",
                         "-i", f"data=datum://{outputs['big.bin']['id']}")["id"]
    info2 = vh.wait(second, timeout=180)
    assert info2["status"] == "complete", info2
    assert f"{outputs['big.bin']['sha256']}  /valohai/inputs/data/big.bin" in logs(vh, second, "stdout")


def test_machines_without_direct_access_go_through_the_daemon(vh: VhOrch, tmp_path: Path, moto) -> None:  # type: ignore[no-untyped-def]
    moto.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    entry = {"name": "here", "cloud": "fake", "max_scale": 1, "idle_timeout": "1m",
             "fake": {"runtime": "process"}, "datastore": datastore(moto)}
    (tmp_path / "envs.yaml").write_text(json.dumps({"environments": [entry]}))
    vh("env", "apply", str(tmp_path / "envs.yaml"))
    vh("project", "add", "p")
    project = make_project(tmp_path, "proj2", """
- step:
    name: write
    image: none
    command: echo hello > "$VH_OUTPUTS_DIR/hello.txt"
""")
    vh.start_daemon()
    eid = vh.run_json("write", "--project", "p", "--adhoc", str(project), "--env", "here")["id"]
    info = vh.wait(eid, timeout=60)
    assert info["status"] == "complete", info
    (output,) = info["outputs"]
    assert output["uri"].startswith(f"s3://{BUCKET}/runs/") and s3_bytes(moto, output["uri"]) == b"hello\n"
    puts = [s for s in moto.proxy.log if s.method == "PUT" and "/runs/" in s.path]
    assert puts and all(s.user_agent.startswith("Boto3/") for s in puts)


def test_a_machine_that_cannot_be_reached_stops_launching_instead_of_churning(aws_vh: VhOrch, moto,  # type: ignore[no-untyped-def]
                                                                              tmp_path: Path, ssh_pool: SSHPool) -> None:
    aws_vh("env", "apply", aws_env(moto, ssh_pool, tmp_path, ssh={
        "user": "root", "private_key_file": str(ssh_pool.client_key), "endpoint_resolver": "vh_test_resolvers:nowhere"}))
    eid = submit(aws_vh)
    aws_vh.start_daemon()
    deadline = time.monotonic() + 60
    while True:
        (row,) = [r for r in aws_vh.json("status", "--json") if r["environment"] == "aws-cpu"]
        failure = row["last_launch_failure"]
        if failure and failure["kind"] == "fatal" and not live(moto):
            break
        assert time.monotonic() < deadline, (row, live(moto))
        time.sleep(0.5)
    assert "cannot be reached" in failure["message"] and "resolver returned" in failure["message"]
    time.sleep(3)  # several passes: no new launch while the environment is broken
    assert len(moto.proxy.actions("RunInstances")) == 1
    assert aws_vh.json("exec", "info", str(eid), "--json")["status"] == "queued"


def test_an_endpoint_resolver_that_cannot_be_imported_is_refused(vh: VhOrch, moto, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                 ssh_pool: SSHPool) -> None:
    path = aws_env(moto, ssh_pool, tmp_path, ssh={"user": "root", "private_key_file": str(ssh_pool.client_key),
                                                 "endpoint_resolver": "no_such_module:resolve"})
    out = vh("env", "apply", path, check=False)
    assert out.returncode == 1 and "cannot import 'no_such_module'" in out.stderr
    assert "aws-cpu" not in vh("env", "list").stdout
