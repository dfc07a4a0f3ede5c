"""An execution's container is confined: no new privileges, a pids limit, fewer capabilities, the step's CPU
and memory limits, the environment's network, never the Docker socket; and an image whose user is not root
reads its inputs and writes its outputs. Checked on the real engine with `docker inspect` while it runs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BUSYBOX, VhOrch, installation, make_project
from vh_orch.bootstrap.isolation import DEFAULT_PIDS_LIMIT, DROPPED_CAPABILITIES, Isolation
from vh_orch.bootstrap.runtimes import RunSpec, RuntimeFailure, docker_run_args

USER_IMAGE = "vh-orch/busybox-user:test"  # the busybox test image with `USER 1000:1000`, built here
CAP_NET_RAW = 13  # its bit in /proc/self/status's capability masks
# The command holds until the test has looked at its container: it writes `go` into the repository folder
# (the container's working directory, on the host). One `&&` link, so a failure before it ends the run.
HOLD = "echo ready && i=0 && while [ ! -f go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done"

STEPS = f"""
- step:
    name: confined
    image: {BUSYBOX}
    command:
      - grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status
      - {HOLD}
    resources:
      cpu: {{max: 0.5}}
      memory: {{max: 64}}
- step:
    name: as-user
    image: {USER_IMAGE}
    command:
      - id -u
      - cat /valohai/inputs/data/data.txt
      - grep -c '"data"' /valohai/config/inputs.json
      - grep -c plain /valohai/config/parameters.json
      - ls /valohai/repository
      - ls /sys/class/net
      - echo scratch > /valohai/repository/scratch.txt
      - echo "written by $(id -u)" > /valohai/outputs/out.txt
      - {HOLD}
    resources:
      memory: {{max: 128}}
    parameters:
      - name: text
        type: string
        default: plain
    inputs:
      - name: data
        filename: data.txt
- step:
    name: greedy
    image: {BUSYBOX}
    command: echo never
    resources:
      cpu: {{max: -1}}
"""


@pytest.fixture(scope="module")
def user_image(docker_images: None) -> str:
    """A non-root image, built from the local busybox image (no pull: the base is on this host)."""
    built = subprocess.run(["docker", "build", "-q", "-t", USER_IMAGE, "-"], capture_output=True, text=True,
                           input=f"FROM {BUSYBOX}\nUSER 1000:1000\n", timeout=120)
    assert built.returncode == 0, built.stderr
    return USER_IMAGE


@pytest.fixture(scope="module")
def docker_vh(tmp_path_factory: pytest.TempPathFactory, user_image: str) -> Iterator[VhOrch]:
    """One daemon: `local` on the docker runtime with its defaults, and `sandbox` (no network, a
    pids limit of its own, no input cache: inputs are copied, not mounted)."""
    root = tmp_path_factory.mktemp("containers")
    with installation(root / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        vh("env", "apply", _write(root / "sandbox.yaml", {"environments": [{
            "name": "sandbox", "cloud": "local", "pull_policy": "never", "container_network": "none",
            "pids_limit": 100, "input_cache_gb": 0, "local": {"runtime": "docker"}}]}))
        vh("env", "update", "sandbox", "--pids-limit", "256")  # the rest of its settings stay
        vh("project", "add", "p")
        vh.project_dir = make_project(root, "proj", STEPS)  # type: ignore[attr-defined]
        data = root / "data.txt"
        data.write_text("input for the image user\n")
        vh.data = data  # type: ignore[attr-defined]
        vh.start_daemon()
        yield vh


def _write(path: Path, doc: dict[str, Any]) -> str:
    path.write_text(json.dumps(doc))  # JSON is YAML
    return str(path)


def submit(vh: VhOrch, *args: str) -> int:
    return vh.run_json(*args, "--project", "p", "--adhoc", str(vh.project_dir))["id"]  # type: ignore[attr-defined]


def log_texts(vh: VhOrch, execution_id: int) -> list[str]:
    out = vh("exec", "logs", str(execution_id), "--json").stdout
    return [e["text"] for e in map(json.loads, out.splitlines()) if e["kind"] == "log"]


def held(vh: VhOrch, execution_id: int, repository: Path | None = None) -> dict[str, Any]:
    """The running container's `docker inspect`, once its command says it is ready; then let it end.
    repository: the folder on the machine mounted as its working directory (default: a local run's)."""
    deadline = time.monotonic() + 120
    while "ready" not in log_texts(vh, execution_id):
        info = vh.json("exec", "info", str(execution_id))
        assert info["status"] in ("queued", "started"), info
        assert time.monotonic() < deadline, "the container never said it was ready"
        time.sleep(0.2)
    name = f"{vh.cluster_id()}-exec-{execution_id}"
    found = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    (container,) = json.loads(found.stdout)
    repository = repository or vh.home / "executions" / str(execution_id) / "1" / "repository"
    (repository / "go").write_text("")
    return container  # type: ignore[no-any-return]


def assert_confined(container: dict[str, Any], pids_limit: int, network: str, user: str = "") -> None:
    host = container["HostConfig"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == pids_limit
    assert {c.removeprefix("CAP_") for c in host["CapDrop"]} == set(DROPPED_CAPABILITIES)
    assert not host.get("CapAdd") and not host["Privileged"]
    assert host["NetworkMode"] == network
    assert container["Config"]["User"] == user, "the image's own user runs the command"
    sources = [m["Source"] for m in container["Mounts"]] + (host.get("Binds") or [])
    assert sources and not any("docker.sock" in s for s in sources), sources


def test_a_container_runs_without_new_privileges_raw_sockets_or_unbounded_resources(docker_vh: VhOrch) -> None:
    execution = submit(docker_vh, "confined")
    container = held(docker_vh, execution)
    assert_confined(container, DEFAULT_PIDS_LIMIT, "bridge")
    host = container["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 64 * 1024 * 1024, "64 MB, and no swap beyond it"
    assert (host["CpuPeriod"], host["CpuQuota"]) == (100_000, 50_000), "half a CPU"
    info = docker_vh.wait(execution)
    assert info["status"] == "complete", info
    # The command's own view: no new privileges, and NET_RAW is not in its bounding set.
    status = dict(line.split(":\t") for line in log_texts(docker_vh, execution) if ":\t" in line)
    assert status["NoNewPrivs"] == "1"
    assert not int(status["CapBnd"], 16) >> CAP_NET_RAW & 1


def test_an_image_user_that_is_not_root_reads_its_inputs_and_writes_its_outputs(docker_vh: VhOrch) -> None:
    execution = submit(docker_vh, "as-user", "-i", f"data={docker_vh.data}")  # type: ignore[attr-defined]
    container = held(docker_vh, execution)
    assert_confined(container, DEFAULT_PIDS_LIMIT, "bridge", user="1000:1000")
    info = docker_vh.wait(execution)
    assert info["status"] == "complete", (info, log_texts(docker_vh, execution))
    texts = log_texts(docker_vh, execution)
    assert texts[:4] == ["1000", "input for the image user", "1", "1"], texts
    assert "valohai.yaml" in texts and "eth0" in texts
    (output,) = info["outputs"]
    assert output["name"] == "out.txt"
    assert Path(output["uri"].removeprefix("file://")).read_text() == "written by 1000\n"


def test_an_environment_without_network_and_with_its_own_pids_limit(docker_vh: VhOrch) -> None:
    execution = submit(docker_vh, "as-user", "--env", "sandbox", "-i", f"data={docker_vh.data}")  # type: ignore[attr-defined]
    container = held(docker_vh, execution)
    assert_confined(container, 256, "none", user="1000:1000")
    info = docker_vh.wait(execution)
    assert info["status"] == "complete", (info, log_texts(docker_vh, execution))
    texts = log_texts(docker_vh, execution)
    assert texts[:2] == ["1000", "input for the image user"], "a copied (uncached) input is readable too"
    assert "lo" in texts and "eth0" not in texts, "no network but loopback"
    assert [o["name"] for o in info["outputs"]] == ["out.txt"]


def test_limits_a_step_cannot_have_are_refused_at_submission(docker_vh: VhOrch) -> None:
    before = docker_vh.json("exec", "list")
    refused = docker_vh("exec", "run", "greedy", "--project", "p", "--adhoc",
                        str(docker_vh.project_dir), check=False)  # type: ignore[attr-defined]
    assert refused.returncode != 0
    assert "resources.cpu.max: -1 is not a number of CPUs" in refused.stderr, refused.stderr
    assert docker_vh.json("exec", "list") == before


LIVE_ENV_FIELDS = {"gpus", "input_cache", "launch_failures", "runtime_reason"}


@pytest.mark.parametrize("option, value, said", [
    ("--container-network", "host", "container_network: 'host' is not one of bridge, none"),
    ("--pids-limit", "-1", "pids_limit: -1 is not a number of processes per container"),
])
def test_container_settings_are_checked(docker_vh: VhOrch, option: str, value: str, said: str) -> None:
    def settings() -> dict:
        # What `env show` says about live machines (their GPUs, the input cache) may change between the reads.
        shown = docker_vh.json("env", "show", "sandbox")
        return {key: value for key, value in shown.items() if key not in LIVE_ENV_FIELDS}

    before = settings()
    refused = docker_vh("env", "update", "sandbox", option, value, check=False)
    assert refused.returncode != 0 and said in refused.stderr, refused.stderr
    assert settings() == before


def test_the_docker_socket_is_never_mounted(tmp_path: Path) -> None:
    """By either of its names, through a link, or any socket on this host; on a machine, by name."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "engine"))
    (tmp_path / "innocent.txt").symlink_to(tmp_path / "engine")
    folder = tmp_path / "execution"
    for source, local in [("/var/run/docker.sock", True), ("/run/docker.sock", False),
                          ("/run/../var/run/docker.sock", False), (str(tmp_path / "innocent.txt"), True)]:
        spec = RunSpec(execution_id=1, command="true", folder=folder, env={}, cluster_id="c", image=BUSYBOX,
                       mounts=((source, "/valohai/inputs/data/data.txt"),), isolation=Isolation())
        with pytest.raises(RuntimeFailure, match="refusing to mount"):
            docker_run_args(spec, str(folder), detach=False, labels={}, local=local)
    sock.close()
