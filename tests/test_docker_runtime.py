"""The docker runtime on a real Docker engine, with locally built images (never pulled)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUSYBOX, VhOrch, make_project

STEPS = f"""
- step:
    name: contract
    image: {BUSYBOX}
    command:
      - pwd
      - echo "job=$VH_JOB_ID dirs=$VH_CONFIG_DIR,$VH_INPUTS_DIR,$VH_OUTPUTS_DIR,$VH_REPOSITORY_DIR"
      - cat /valohai/config/parameters.json
      - cat /valohai/config/inputs.json
      - cat /valohai/inputs/data/data.txt
      - ls /valohai/repository
      - >-
        echo '{{"score": 0.75}}'
      - echo result > /valohai/outputs/result.txt
    parameters:
      - name: text
        type: string
        default: plain
    inputs:
      - name: data
        filename: data.txt
- step:
    name: sleep
    image: {BUSYBOX}
    command:
      - echo sleeping
      - sleep 120
"""


@pytest.fixture
def docker_vh(vh: VhOrch, tmp_path: Path, docker_images: None) -> VhOrch:
    vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", STEPS)  # type: ignore[attr-defined]
    vh.start_daemon()
    return vh


def adhoc(vh: VhOrch, *args: str) -> dict:  # type: ignore[type-arg]
    return vh.run_json(*args, "--project", "p", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]


def log_texts(vh: VhOrch, execution_id: int) -> list[str]:
    out = vh("exec", "logs", str(execution_id), "--json").stdout
    return [json.loads(line)["text"] for line in out.splitlines() if json.loads(line)["kind"] == "log"]


def test_env_show_says_docker_when_an_engine_answers(vh: VhOrch, docker_images: None) -> None:
    shown = vh.json("env", "show", "local")
    assert shown["runtime"] == "docker" and "Docker engine" in shown["runtime_reason"]
    vh("env", "update", "local", "--runtime", "process")
    assert vh.json("env", "show", "local")["runtime"] == "process"


def test_in_execution_contract_holds_in_a_container(docker_vh: VhOrch, tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("from the host\n")
    created = adhoc(docker_vh, "contract", "-p", "text=$(id)", "-i", f"data={data}")
    info = docker_vh.wait(created["id"])
    assert info["status"] == "complete", info
    assert info["runtime"] == "docker"
    text = "\n".join(log_texts(docker_vh, created["id"]))
    assert "/valohai/repository\n" in text
    assert f"job={created['id']} dirs=/valohai/config,/valohai/inputs,/valohai/outputs,/valohai/repository" in text
    assert '"text": "$(id)"' in text
    assert '"path": "/valohai/inputs/data/data.txt"' in text
    assert "from the host" in text and "valohai.yaml" in text
    assert info["metadata_latest"] == {"score": 0.75}
    (output,) = info["outputs"]
    assert output["name"] == "result.txt" and output["sha256"] == hashlib.sha256(b"result\n").hexdigest()
    name = f"{docker_vh.cluster_id()}-exec-{created['id']}"
    gone = subprocess.run(["docker", "inspect", name], capture_output=True)
    assert gone.returncode != 0, "the container is removed after it ends"
    assert docker_vh.containers() == []


def test_the_example_runs_unmodified_with_valohai_utils_in_a_container(
    vh: VhOrch, demo_repo: Path, docker_images: None
) -> None:
    vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
    vh("project", "add", "demo", "--repo", str(demo_repo))
    vh.start_daemon()
    follow = vh("exec", "run", "train", "--project", "demo", "-p", "epochs=3", "--follow")
    assert "no dataset given" in follow.stdout and "model written" in follow.stdout
    info = vh.json("exec", "info", "1")
    assert info["status"] == "complete" and info["runtime"] == "docker"
    assert info["image"] == "vh-orch/example-python:3.11"
    assert info["metadata_latest"]["epoch"] == 3
    assert [o["name"] for o in info["outputs"]] == ["model.json"]


def test_stop_ends_a_running_container(docker_vh: VhOrch) -> None:
    created = adhoc(docker_vh, "sleep")
    deadline = time.monotonic() + 60
    while "sleeping" not in log_texts(docker_vh, created["id"]):
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.1)
    docker_vh("exec", "stop", str(created["id"]))
    info = docker_vh.wait(created["id"], timeout=60)
    assert info["status"] == "stopped" and info["status_reason"] == "stopped by request"
    assert docker_vh.containers(all_=False) == []


def test_a_failed_pull_is_an_error_with_the_reason(docker_vh: VhOrch) -> None:
    # A registry on a closed loopback port: the pull fails fast and never leaves the machine.
    created = adhoc(docker_vh, "sleep", "--image", "127.0.0.1:9/vh-orch/missing:1", "--pull", "always")
    info = docker_vh.wait(created["id"])
    assert info["status"] == "error"
    assert "pulling image '127.0.0.1:9/vh-orch/missing:1' failed" in info["status_reason"]


def test_a_missing_image_with_pull_policy_never_is_an_error(docker_vh: VhOrch) -> None:
    created = adhoc(docker_vh, "sleep", "--image", "vh-orch/not-built:1")
    info = docker_vh.wait(created["id"])
    assert info["status"] == "error"
    assert info["status_reason"] == "image 'vh-orch/not-built:1' is not on this host and the pull policy is `never`"


# -- one container per execution on an engine: the engine fences a stale attempt ----------------------


def test_an_earlier_attempt_never_starts_beside_a_later_one_and_a_later_one_replaces_it(
    tmp_path: Path, docker_images: None
) -> None:
    """A replica paused past its lease may wake and start its attempt after its successor started the
    next one: the name is taken, so it starts nothing. A later attempt removes an earlier one's
    container first. Commands on a container go by its id, never by the shared name."""
    import uuid

    from vh_orch.bootstrap.runtimes import FOLDERS, STALE_ATTEMPT, DockerRuntime, RunSpec, RuntimeFailure

    for name in FOLDERS:
        (tmp_path / name).mkdir()
    cluster = f"vh-fence-{uuid.uuid4().hex[:8]}"

    def spec(attempt: int) -> RunSpec:
        return RunSpec(execution_id=7, command="sleep 60", folder=tmp_path, env={}, cluster_id=cluster,
                       attempt=attempt, image=BUSYBOX, pull_policy="never")

    def attempts_on_engine() -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=vh-orch.cluster={cluster}", "--format",
                              '{{.Label "vh-orch.attempt"}} {{.State}}'], capture_output=True, text=True, timeout=60)
        return sorted(out.stdout.split("\n")[:-1])

    runtime = DockerRuntime()
    second = runtime.start(spec(2))
    try:
        eventually = time.monotonic() + 60
        while attempts_on_engine() != ["2 running"]:
            assert time.monotonic() < eventually, attempts_on_engine()
            time.sleep(0.1)
        with pytest.raises(RuntimeFailure, match=STALE_ATTEMPT):
            DockerRuntime().start(spec(1))
        assert attempts_on_engine() == ["2 running"], "the stale attempt started nothing and removed nothing"
        third = DockerRuntime().start(spec(3))
        assert second.wait(60) != 0, "attempt 2's container was removed before attempt 3's started"
        while attempts_on_engine() != ["3 running"]:
            assert time.monotonic() < eventually, attempts_on_engine()
            time.sleep(0.1)
        third.stop(0)
        third.wait(60)
    finally:
        subprocess.run(f"docker ps -aq --filter label=vh-orch.cluster={cluster} | xargs -r docker rm -f",
                       shell=True, capture_output=True, timeout=60)
