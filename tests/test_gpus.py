"""GPUs per execution: found on machines (a stand-in nvidia-smi, tests/fakegpu), asked for in valohai.yaml
(`resources.devices: {nvidia.com/gpu: N}`), the environment or `--gpus`, given out by the dispatcher
one index to one execution at a time, and shown to the command (CUDA_VISIBLE_DEVICES; Docker's
`--gpus` and NVIDIA_VISIBLE_DEVICES, checked on a created container: no NVIDIA runtime here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from conftest import BUSYBOX, TESTS, SSHPool, VhOrch, eventually, installation, make_project
from vh_orch.bootstrap.isolation import Isolation
from vh_orch.bootstrap.runtimes import RunSpec, docker_run_args
from vh_orch.config.environments import parse_entry
from vh_orch.config.resources import gpu_count
from vh_orch.config.steps import resolve_step
from vh_orch.errors import ConfigError, UserInputError
from vh_orch.orchestrator import policy as P
from vh_orch.orchestrator.gpus import most_gpus, pick_gpus

FAKEGPU = TESTS / "fakegpu"
# The command holds until the test writes the file `release` beside the project (at most 60 s).
HOLD = "i=0 && while [ ! -f {release} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done"
SHOW = "env | grep '^CUDA_VISIBLE_DEVICES=' || echo CUDA_VISIBLE_DEVICES-unset"


def steps(release: Path) -> str:
    return f"""
- step:
    name: two-gpus
    image: {BUSYBOX}
    command:
      - {SHOW}
      - {HOLD.format(release=release)}
    resources:
      devices:
        nvidia.com/gpu: 2
- step:
    name: two-gpus-at-once
    image: {BUSYBOX}
    command: {SHOW}
    resources:
      devices:
        nvidia.com/gpu: 2
- step:
    name: no-gpu
    image: {BUSYBOX}
    command: {SHOW}
- step:
    name: eight-gpus
    image: {BUSYBOX}
    command: echo never
    resources:
      devices:
        nvidia.com/gpu: 8
"""


# -- asking: valohai.yaml, the environment, --gpus ------------------------------------------------

def ask(devices: str) -> int | None:
    text = f"- step:\n    name: s\n    image: {BUSYBOX}\n    command: echo hi\n    resources:\n      devices: {devices}\n"
    return resolve_step(text, "s", {}, {}, {}).gpus


def test_a_step_asks_for_gpus_with_resources_devices() -> None:
    assert ask("{nvidia.com/gpu: 2}") == 2
    assert ask("{}") is None
    no_resources = f"- step:\n    name: s\n    image: {BUSYBOX}\n    command: echo hi\n"
    assert resolve_step(no_resources, "s", {}, {}, {}).gpus is None


@pytest.mark.parametrize("devices, said", [
    ("{nvidia.com/gpu: -1}", "resources.devices.nvidia.com/gpu: -1 is less than the minimum of 1"),
    ("{nvidia.com/gpu: 0.5}", "resources.devices.nvidia.com/gpu: 0.5 is less than the minimum of 1"),
    ("{nvidia.com/gpu: 1.5}", "resources.devices.nvidia.com/gpu: 1.5 is not a number of GPUs (a whole number"),
    ("{nvidia.com/gpu: 100000000000000000000}", "100000000000000000000 is not a number of GPUs (0 to 64"),
    ("{nvidia.com/gpu: .inf}", "resources.devices.nvidia.com/gpu: inf is not a number of GPUs"),
    ("{nvidia.com/gpu: two}", "resources.devices.nvidia.com/gpu: 'two' is not of type 'number'"),
    ("{nvidia.com/gpu: true}", "resources.devices.nvidia.com/gpu: true is a YAML boolean, not a number"),
    ("{amd.com/gpu: 1}", "resources.devices: 'amd.com/gpu' is not a device vh-orch can give; only nvidia.com/gpu"),
])
def test_a_step_asking_for_gpus_it_cannot_have_is_refused(devices: str, said: str) -> None:
    with pytest.raises(UserInputError) as refused:
        ask(devices)
    assert said in str(refused.value), str(refused.value)


@pytest.mark.parametrize("value", [-1, 65, 10**20, 1.5, True, "2", None])
def test_a_number_of_gpus_is_a_whole_number_up_to_64(value: Any) -> None:
    with pytest.raises(UserInputError, match=r"^gpus: .* is not a number of GPUs"):
        gpu_count(value, "gpus")
    assert [gpu_count(n, "gpus") for n in (0, 1, 64)] == [0, 1, 64]


@pytest.mark.parametrize("value", [-1, 1.5, 65, "one", True])
def test_an_environment_default_is_checked(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"\.gpus_per_execution: .* is not a number of GPUs each execution asks for"):
        parse_entry({"name": "e", "cloud": "local", "gpus_per_execution": value}, "environments[0]")
    spec = parse_entry({"name": "e", "cloud": "local", "gpus_per_execution": 2}, "environments[0]")
    assert spec.settings["gpus_per_execution"] == 2


# -- sharing out: pure rules ----------------------------------------------------------------------

def test_a_claim_takes_the_lowest_free_indices() -> None:
    assert pick_gpus(4, set(), 2) == [0, 1]
    assert pick_gpus(4, {0, 2}, 2) == [1, 3]
    assert pick_gpus(4, {0, 1, 2}, 2) is None
    assert pick_gpus(0, set(), 0) == []


def test_what_a_machine_of_an_environment_can_have_is_known_once_each_kind_was_seen() -> None:
    assert most_gpus({}, [None]) is None  # no machine set up yet: not known
    assert most_gpus({None: 4}, [None]) == 4  # this host
    assert most_gpus({"g5.xlarge": 1}, ["g5.xlarge", "g5.12xlarge"]) is None  # a fallback type may have more
    assert most_gpus({"g5.xlarge": 1, "p3.2xlarge": 1, "g5.12xlarge": 4}, ["g5.xlarge", "g5.12xlarge"]) == 4
    assert most_gpus({"a:22": 0}, ["a:22", "b:22"]) is None  # a pool host not seen yet may have some
    assert most_gpus({"a:22": 0, "b:22": 8}, ["a:22", "b:22"]) == 8


def test_the_dispatcher_places_an_execution_only_where_its_gpus_are_free() -> None:
    env = P.EnvView(id=1, name="g", cloud="fake", max_scale=1, slots=3, instances=None, queued=3,
                    queued_head=(10, 11, 12), queued_gpus={10: 4, 11: 2})
    m = P.MachineView(id=1, environment_id=1, state=P.BUSY, instance_id="i-1", state_changed_at=datetime(2026, 1, 1),
                      running=1, gpus=4, gpus_held=2)
    actions = P.decide(P.Snapshot(environments=(env,), machines=(m,)), datetime(2026, 1, 1))
    # 10 waits for four GPUs (two are held); 11 and 12 fit behind it.
    assert [(a.execution_id, a.machine_id) for a in actions if isinstance(a, P.Dispatch)] == [(11, 1), (12, 1)]


def test_executions_on_one_machine_never_hold_the_same_gpu(tmp_path: Path, db_url: str) -> None:
    """Reconcile passes on the fake cloud (its machines run here: they have this host's GPUs) with real
    claims on SQLite and PostgreSQL: after every pass, what runs holds distinct indices of the 4."""
    from test_reconcile import make_world

    from vh_orch.orchestrator.models import Execution

    w = make_world(tmp_path, url=db_url, max_scale=1, slots=4, fake={"boot_seconds": 0})
    w.reconciler.host_gpus = lambda: (4, "NVIDIA Fake A100")
    asks = [2, 2, 1, 0, 3, 1, 4, 2]
    ids = [w.store.create_execution(Execution(
        project_id=w.project_id, counter=0, commit_id=w.commit_id, step="s", command="echo hi",
        environment_id=w.env.id, user="tester", gpus=n)).id for n in asks]  # type: ignore[arg-type]
    done: set[int] = set()
    most = 0
    for _ in range(60):
        w.run(1)
        running = [w.store.get_execution(i) for i in w.host.running]
        held = [g for e in running for g in e.gpu_indices or []]
        most = max(most, len(held))
        assert len(held) == len(set(held)) and set(held) <= {0, 1, 2, 3}, [(e.id, e.gpu_indices) for e in running]
        assert all(len(e.gpu_indices or []) == e.gpus for e in running)
        if len(done) == len(ids):
            break
        if running:  # the oldest one ends
            first = min(running, key=lambda e: e.id)
            w.store.finish_execution(first.id, first.attempt, "complete", None, 0)  # type: ignore[arg-type]
            del w.host.running[first.id]  # type: ignore[arg-type]
            done.add(first.id)  # type: ignore[arg-type]
    assert done == set(ids)
    assert most == 4, "the GPUs were shared out, not one execution at a time"
    assert [(m.gpus, m.gpu_model) for m in w.machines("ready", "busy")] == [(4, "NVIDIA Fake A100")]


# -- this host: the local environment on the process runtime -------------------------------------

@pytest.fixture(scope="module")
def gpu_vh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VhOrch]:
    """One daemon whose host has 4 (stand-in) GPUs: `local` on the process runtime with 3 slots."""
    root = tmp_path_factory.mktemp("gpus")
    with installation(root / "home") as vh:
        vh.env["PATH"] = f"{FAKEGPU}:{vh.env['PATH']}"
        vh.env["FAKE_NVIDIA_GPUS"] = "4"
        vh("env", "update", "local", "--runtime", "process", "--slots", "3")
        vh("project", "add", "p")
        vh.release = root / "release"  # type: ignore[attr-defined]
        vh.project_dir = make_project(root, "proj", steps(vh.release))  # type: ignore[attr-defined]
        vh.start_daemon()
        eventually("the daemon to find the host's GPUs", lambda: [m["gpus"] for m in vh.json("machine", "list")] == [4])
        yield vh


def submit(vh: VhOrch, step: str, *args: str, check: bool = True) -> Any:
    result = vh("exec", "run", step, *args, "--project", "p", "--adhoc", str(vh.project_dir), "--json",  # type: ignore[attr-defined]
                check=check)
    return result.json()["id"] if check else result


def shown(vh: VhOrch, execution_id: int) -> str:
    lines = [json.loads(line) for line in vh("exec", "logs", str(execution_id), "--json").stdout.splitlines()]
    return next(e["text"] for e in lines if e["kind"] == "log" and e["stream"] == "stdout")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_three_executions_of_two_gpus_share_four_two_at_a_time(gpu_vh: VhOrch) -> None:
    machine = gpu_vh.json("machine", "list")[0]
    assert (machine["gpus"], machine["gpu_model"]) == (4, "NVIDIA Fake A100")
    assert "4 × NVIDIA Fake A100" in gpu_vh("machine", "list").stdout
    ids = [submit(gpu_vh, "two-gpus") for _ in range(3)]

    def statuses() -> list[str]:
        return sorted(gpu_vh.json("exec", "info", str(i))["status"] for i in ids)

    # Three slots, four GPUs: two hold theirs; the third waits for GPUs, not for a slot.
    eventually("two running and one waiting", lambda: statuses() == ["queued", "started", "started"])
    gpu_vh.release.touch()  # type: ignore[attr-defined]
    infos = [gpu_vh.wait(i) for i in ids]
    assert [i["status"] for i in infos] == ["complete"] * 3, infos
    for info in infos:
        assert info["gpus_asked"] == 2
        assert len(info["gpus"]) == 2 and set(info["gpus"]) <= {0, 1, 2, 3}, info["gpus"]
        assert shown(gpu_vh, info["id"]) == "CUDA_VISIBLE_DEVICES=" + ",".join(map(str, info["gpus"]))
    spans = {i["id"]: (when(i["started_at"]), when(i["ended_at"])) for i in infos}
    overlapping = [(a, b) for a, b in combinations(infos, 2)
                   if spans[a["id"]][0] < spans[b["id"]][1] and spans[b["id"]][0] < spans[a["id"]][1]]
    assert overlapping, "the first two ran side by side"
    for a, b in overlapping:
        assert not set(a["gpus"]) & set(b["gpus"]), (a["id"], a["gpus"], b["id"], b["gpus"])
    assert max(s for s, _ in spans.values()) >= min(e for _, e in spans.values()), "never three at a time"


def test_an_execution_that_asks_for_no_gpu_sees_none_and_one_given_by_option_sees_its_own(gpu_vh: VhOrch) -> None:
    none = gpu_vh.wait(submit(gpu_vh, "no-gpu"))
    assert none["status"] == "complete" and none["gpus"] == [] and none["gpus_asked"] == 0
    assert shown(gpu_vh, none["id"]) == "CUDA_VISIBLE_DEVICES="  # set, and empty: CUDA sees no device

    one = gpu_vh.wait(submit(gpu_vh, "no-gpu", "--gpus", "1"))
    assert one["status"] == "complete" and len(one["gpus"]) == 1
    assert shown(gpu_vh, one["id"]) == f"CUDA_VISIBLE_DEVICES={one['gpus'][0]}"

    gpu_vh("env", "update", "local", "--gpus-per-execution", "3")
    try:
        three = gpu_vh.wait(submit(gpu_vh, "no-gpu"))
        zero = gpu_vh.wait(submit(gpu_vh, "two-gpus-at-once", "--gpus", "0"))  # the option over the step
    finally:
        gpu_vh("env", "update", "local", "--gpus-per-execution", "0")
    assert three["gpus_asked"] == 3 and len(three["gpus"]) == 3
    assert zero["status"] == "complete" and zero["gpus_asked"] == 0
    assert shown(gpu_vh, zero["id"]) == "CUDA_VISIBLE_DEVICES="


@pytest.mark.parametrize("step, args, said", [
    ("eight-gpus", (), "step 'eight-gpus': resources.devices.nvidia.com/gpu: 8 GPUs asked for, but the machines "
                      "of environment 'local' have at most 4 GPUs"),
    ("no-gpu", ("--gpus", "5"), "gpus: 5 GPUs asked for, but the machines of environment 'local' have at most 4"),
    ("no-gpu", ("--gpus", "-1"), "gpus: -1 is not a number of GPUs"),
])
def test_more_gpus_than_a_machine_has_are_refused_at_submission(gpu_vh: VhOrch, step: str, args: tuple[str, ...],
                                                                  said: str) -> None:
    before = gpu_vh.json("exec", "list")
    refused = submit(gpu_vh, step, *args, check=False)
    assert refused.returncode != 0 and said in refused.stderr, refused.stderr
    assert gpu_vh.json("exec", "list") == before


def test_the_api_takes_gpus_and_refuses_more_than_a_machine_has(gpu_vh: VhOrch) -> None:
    from bombs import package
    from test_api_security import Client, project_id

    gpu_vh("user", "add", "gina", "--admin")  # `local` runs processes: administrators only
    gpu_vh("project", "add", "ginas", "--owner", "gina")
    gina = Client(gpu_vh.api_url(), gpu_vh.json("user", "token", "gina")["token"])
    pid = project_id(gina, "ginas")
    yaml_text = (gpu_vh.project_dir / "valohai.yaml").read_bytes()  # type: ignore[attr-defined]
    commit = gina.upload(pid, package({"valohai.yaml": yaml_text})).json()["identifier"]
    before = gpu_vh.json("exec", "list")
    for gpus, said in ((5, "5 GPUs asked for, but the machines of environment 'local' have at most 4"),
                       (-1, "greater than or equal to 0"), ("2", "valid integer")):
        answer = gina.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "no-gpu",
                                                         "gpus": gpus})
        assert answer.status_code == 400 and said in answer.json().get("gpus", [{}])[0].get("message", ""), answer.text
    assert gpu_vh.json("exec", "list") == before
    made = gina.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "no-gpu", "gpus": 2})
    assert made.status_code == 201, made.text
    info = gpu_vh.wait(made.json()["id"])
    assert info["status"] == "complete" and info["gpus_asked"] == 2 and len(info["gpus"]) == 2
    assert shown(gpu_vh, info["id"]) == "CUDA_VISIBLE_DEVICES=" + ",".join(map(str, info["gpus"]))


# -- Docker: the container's DeviceRequests --------------------------------------------------------

def created(tmp_path: Path, isolation: Isolation, env: dict[str, str]) -> dict[str, Any]:
    """`docker create` with the arguments an execution's `docker run` gets, inspected (never started:
    this engine has no NVIDIA runtime)."""
    spec = RunSpec(execution_id=1, command="true", folder=tmp_path, env=env, cluster_id=f"vh-gpu-{uuid.uuid4().hex[:8]}",
                   image=BUSYBOX, isolation=isolation)
    args = docker_run_args(spec, str(tmp_path), detach=False, labels={}, local=True)
    assert args[:2] == ["docker", "run"]
    made = subprocess.run(["docker", "create", *args[2:]], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    try:
        out = subprocess.run(["docker", "inspect", spec.container_name], capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout)[0]  # type: ignore[no-any-return]
    finally:
        subprocess.run(["docker", "rm", "-f", spec.container_name], capture_output=True, timeout=60)


def test_a_container_is_given_exactly_its_gpus(docker_images: None, tmp_path: Path) -> None:
    given = created(tmp_path, Isolation(gpus=(1, 3)), {"NVIDIA_VISIBLE_DEVICES": "all"})
    requests = given["HostConfig"]["DeviceRequests"]
    assert [(r["Driver"], r["Count"], r["DeviceIDs"], r["Capabilities"]) for r in requests] == \
        [("", 0, ["1", "3"], [["gpu"]])]
    env = given["Config"]["Env"]
    assert "NVIDIA_VISIBLE_DEVICES=1,3" in env and "NVIDIA_VISIBLE_DEVICES=all" not in env, env

    none = created(tmp_path, Isolation(), {"NVIDIA_VISIBLE_DEVICES": "all"})
    assert not none["HostConfig"]["DeviceRequests"]
    assert "NVIDIA_VISIBLE_DEVICES=void" in none["Config"]["Env"], "an image's `all` gives it no GPU either"


# -- an SSH host: its GPUs found when it is set up --------------------------------------------------

def test_an_ssh_host_reports_its_gpus_after_bootstrap(vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool,
                                                      docker_images: None) -> None:
    import sshhosts

    tools = tmp_path / "host-bin"
    tools.mkdir()
    shutil.copy(FAKEGPU / "nvidia-smi", tools / "nvidia-smi")
    (tools / "count").write_text("2\n")  # an SSH host gets no test environment: the file says how many
    host = sshhosts.make_host(tmp_path / "gpuhost", 27, ssh_pool.net)
    host.start(ssh_pool.client_public,
               extra_config=f"SetEnv PATH={tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
    try:
        doc = {"environments": [{
            "name": "gpupool", "cloud": "ssh", "min_scale": 1, "idle_timeout": "1h", "pull_policy": "never",
            "ssh": {"user": "root", "private_key_file": str(ssh_pool.client_key), "connect_timeout": "3s",
                    "gpu_setup_command": "true",  # never install packages on this machine
                    "hosts": [{"address": host.address, "port": 22, "host_key": host.host_key,
                               "workdir": str(tmp_path / "workdir")}]},
        }]}
        (tmp_path / "pool.yaml").write_text(json.dumps(doc))
        vh("env", "apply", str(tmp_path / "pool.yaml"))
        vh.start_daemon()

        # This host's Docker has no NVIDIA runtime: the bootstrap's check in a container fails, and the
        # machine records the GPUs nvidia-smi listed beside the reason (tests/test_gpu_setup.py has the rest).
        def set_up() -> Any:
            found = [m for m in vh.json("machine", "list", "--all") if m["environment"] == "gpupool"]
            return found and found[0]["state"] not in ("requested", "provisioning", "bootstrapping") and found[0]

        machine = eventually("the pool host's bootstrap to end", set_up)
        assert (machine["gpus"], machine["gpu_model"]) == (2, "NVIDIA Fake A100"), machine
        assert "nvidia-container-toolkit" in machine["reason"], machine
    finally:
        if vh.daemon is not None:
            vh.stop_daemon()
        host.stop()
