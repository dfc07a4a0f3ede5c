"""Hardware use of running executions: sampled where they run (this host's processes and
containers, an SSH host's containers), stored bounded, shown by `exec utilization`, `exec info`
(peak memory) and the API (the execution page's chart: test_web.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bombs import package
from conftest import BUSYBOX, SSHPool, VhOrch, eventually, installation, make_project
from test_api_security import Client, project_id
from test_ssh_pool import both_hosts, pool_yaml

from vh_orch.timeutil import as_utc

FAKE_GPU = Path(__file__).parent / "fakegpu"
MB = 1_000_000
MiB = 1024 * 1024
# Burns one core and holds 250 MB (written, so resident) for 8 s; then prints, as metadata, how
# much of a core it got by its own count (on a busy machine, less than all of one).
BURN = """import json, time
held = b"x" * (250 * 1024 * 1024)
cpu, start = time.process_time(), time.monotonic()
while time.monotonic() - start < 8:
    pass
print(json.dumps({"own_cpu_percent": (time.process_time() - cpu) / (time.monotonic() - start) * 100}))
print(len(held))
"""
STEPS = """
- step:
    name: burn
    image: vh-orch/example-python:3.11
    command: python burn.py
"""


def busy(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in samples if (s["cpu_percent"] or 0) >= 50 and (s["memory_bytes"] or 0) >= 200 * MB]


def burned(vh: VhOrch, execution_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The burn execution once it has ended, and its samples: at least three saw it hold 200 MB or
    more, their CPU agrees with what the command counted itself, and when it had a core to itself
    (a quiet machine) at least three saw it burn more than half of one. Its peak memory says so."""
    info = vh.wait(execution_id, timeout=120)
    assert info["status"] == "complete", info
    samples = vh.json("exec", "utilization", str(execution_id))
    held = [s for s in samples if (s["memory_bytes"] or 0) >= 200 * MB]
    assert len(held) >= 3, samples
    own = info["metadata_latest"]["own_cpu_percent"]
    sampled = sum(s["cpu_percent"] for s in held) / len(held)
    assert abs(sampled - own) <= 25, (own, samples)
    if own >= 75:
        assert len(busy(samples)) >= 3, samples
    assert info["peak_memory_bytes"] >= 200 * MB
    assert info["peak_memory_bytes"] == max(s["memory_bytes"] for s in samples)
    assert all(s["gpus"] == [] for s in samples)  # it was given no GPU
    times = [s["time"] for s in samples]
    assert times == sorted(times) and len(set(times)) == len(times)
    return info, samples


def test_a_process_that_burns_a_core_and_holds_250_mb_is_sampled(vh: VhOrch, tmp_path: Path) -> None:
    vh.env["VH_ORCH_UTILIZATION_INTERVAL_S"] = "1"
    vh("env", "update", "local", "--runtime", "process")
    vh("project", "add", "p")
    folder = make_project(tmp_path, "burn", STEPS, {"burn.py": BURN})
    vh.start_daemon()
    execution_id = vh.run_json("burn", "--project", "p", "--adhoc", str(folder))["id"]
    info, samples = burned(vh, execution_id)
    assert info["runtime"] == "process"
    table = vh("exec", "utilization", str(execution_id)).stdout
    assert "cpu %" in table and "MiB" in table and "peak memory" in table
    assert "gpu" not in table


@pytest.fixture
def api_world(tmp_path: Path, docker_images: None) -> Iterator[tuple[VhOrch, Client, Client, str]]:
    """A daemon running containers, sampling every second; alice owns project `mine` with the burn step."""
    with installation(tmp_path / "home") as vh:
        vh.env["VH_ORCH_UTILIZATION_INTERVAL_S"] = "1"
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        for user in ("alice", "bob"):
            vh("user", "add", user)
        vh("project", "add", "mine", "--owner", "alice")
        vh.start_daemon()
        api = vh.api_url()
        alice, bob = (Client(api, vh.json("user", "token", user)["token"]) for user in ("alice", "bob"))
        pid = project_id(alice, "mine")
        uploaded = alice.upload(pid, package({"valohai.yaml": STEPS.encode(), "burn.py": BURN.encode()}))
        assert uploaded.status_code == 201, uploaded.text
        yield vh, alice, bob, uploaded.json()["identifier"]


def test_a_container_is_sampled_and_the_api_shows_it_to_its_owner_only(
        api_world: tuple[VhOrch, Client, Client, str]) -> None:
    vh, alice, bob, commit = api_world
    made = alice.post("/api/v0/executions/", json={"project": project_id(alice, "mine"), "commit": commit,
                                                   "step": "burn"})
    assert made.status_code == 201, made.text
    execution_id = made.json()["id"]
    path = f"/api/v0/executions/{execution_id}/utilization/"

    def sampled_while_running() -> bool:
        answer = alice.get(path).json()
        return bool(answer["samples"]) and vh.json("exec", "info", str(execution_id))["status"] == "started"

    eventually("a sample while it runs", sampled_while_running)
    info, samples = burned(vh, execution_id)
    assert info["runtime"] == "docker"
    answer = alice.get(path)
    assert answer.status_code == 200
    assert answer.json() == {"peak_memory_bytes": info["peak_memory_bytes"], "interval_s": 1.0, "samples": samples}
    later = alice.get(path, params={"after": samples[1]["time"]})
    assert later.status_code == 200 and later.json()["samples"] == samples[2:]
    refused = alice.get(path, params={"after": "yesterday"})
    assert refused.status_code == 400 and "yesterday" in refused.json()["after"][0]["message"]
    # Another user's execution is not there for bob, nor is an execution that does not exist.
    assert bob.get(path).status_code == 404
    assert bob.get(f"/api/v0/executions/{execution_id}/").status_code == 404
    assert alice.get(f"/api/v0/executions/{execution_id + 1000}/utilization/").status_code == 404


def test_an_ssh_hosts_container_is_sampled_over_its_connection(vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool,
                                                                docker_images: None) -> None:
    vh.env["VH_ORCH_UTILIZATION_INTERVAL_S"] = "1"
    vh("env", "apply", pool_yaml(ssh_pool, tmp_path, both_hosts(ssh_pool)[:1]))
    vh("project", "add", "p")
    folder = make_project(tmp_path, "burn", STEPS, {"burn.py": BURN})
    vh.start_daemon()
    execution_id = vh.run_json("burn", "--project", "p", "--adhoc", str(folder), "--env", "onprem")["id"]
    info, _ = burned(vh, execution_id)
    assert info["machine"] is not None


def test_the_gpus_an_execution_was_given_are_sampled_with_it(vh: VhOrch, tmp_path: Path) -> None:
    """This host's (stand-in) nvidia-smi reports 4 GPUs; an execution given 2 of them has their use in
    every sample, and none of the others'."""
    vh.env["PATH"] = f"{FAKE_GPU}{os.pathsep}{vh.env['PATH']}"
    vh.env.update(FAKE_NVIDIA_GPUS="4", FAKE_NVIDIA_UTIL="61", VH_ORCH_UTILIZATION_INTERVAL_S="1")
    vh("env", "update", "local", "--runtime", "process")
    vh("project", "add", "p")
    folder = make_project(tmp_path, "nap", "- step:\n    name: nap\n    image: none\n    command: sleep 4\n")
    vh.start_daemon()
    eventually("the daemon to find the host's GPUs", lambda: [m["gpus"] for m in vh.json("machine", "list")] == [4])
    execution_id = vh.run_json("nap", "--project", "p", "--adhoc", str(folder), "--gpus", "2")["id"]
    info = vh.wait(execution_id)
    assert info["status"] == "complete" and len(info["gpus"]) == 2, info
    samples = vh.json("exec", "utilization", str(execution_id))
    assert len(samples) >= 2, samples
    for sample in samples:
        assert sample["gpus"] == [{"index": i, "utilization_percent": 61.0, "memory_used_bytes": (1024 + 100 * i) * MiB}
                                  for i in sorted(info["gpus"])], sample
    table = vh("exec", "utilization", str(execution_id)).stdout
    assert all(f"gpu {i} %" in table for i in info["gpus"])


def test_sampling_can_be_turned_off(vh: VhOrch, tmp_path: Path) -> None:
    vh.env["VH_ORCH_UTILIZATION_INTERVAL_S"] = "0"
    vh("env", "update", "local", "--runtime", "process")
    vh("project", "add", "p")
    folder = make_project(tmp_path, "nap", "- step:\n    name: nap\n    image: none\n    command: sleep 2\n")
    vh.start_daemon()
    execution_id = vh.run_json("nap", "--project", "p", "--adhoc", str(folder))["id"]
    info = vh.wait(execution_id)
    assert info["status"] == "complete" and info["peak_memory_bytes"] is None
    assert vh.json("exec", "utilization", str(execution_id)) == []
    assert "no hardware use sampled" in vh("exec", "utilization", str(execution_id)).stderr


@pytest.mark.parametrize("value", ["0.1", "-1", "soon", "7200"])
def test_a_bad_sampling_interval_is_refused_with_how_to_fix_it(value: str) -> None:
    from vh_orch.errors import ConfigError
    from vh_orch.settings import Settings

    with pytest.raises(ConfigError, match="VH_ORCH_UTILIZATION_INTERVAL_S"):
        Settings.from_env({"VH_ORCH_HOME": "/nonexistent", "VH_ORCH_UTILIZATION_INTERVAL_S": value})
    assert Settings.from_env({"VH_ORCH_HOME": "/nonexistent"}).utilization_interval_s == 2.0
    assert Settings.from_env({"VH_ORCH_HOME": "/nonexistent", "VH_ORCH_UTILIZATION_INTERVAL_S": "0"}
                             ).utilization_interval_s == 0


# -- the parts: the reader against this host, the sampler and the store ---------------------------------

def test_cgroup_files_are_found_for_cgroup_v1_and_v2() -> None:
    from vh_orch.bootstrap.usage import cgroup_files, cgroup_reading

    v1 = ("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n")
    files = cgroup_files(v1, root="/cg")
    assert files is not None and not files.v2
    assert (files.cpu, files.memory, files.memory_stat) == (
        "/cg/cpu,cpuacct/docker/abc/cpuacct.usage", "/cg/memory/docker/abc/memory.usage_in_bytes",
        "/cg/memory/docker/abc/memory.stat")
    reading = cgroup_reading(files, "2500000000\n", "300000000\n", "cache 5\ntotal_inactive_file 100000000\n", 7.0)
    assert reading is not None and (reading.cpu_s, reading.memory_bytes, reading.since) == (2.5, 200_000_000, 7.0)

    v2 = "0::/system.slice/docker-abc.scope\n"
    files = cgroup_files(v2, root="/cg")
    assert files is not None and files.v2 and files.cpu == "/cg/system.slice/docker-abc.scope/cpu.stat"
    reading = cgroup_reading(files, "usage_usec 1500000\nuser_usec 1\n", "4096\n", "anon 1\ninactive_file 1024\n", None)
    assert reading is not None and (reading.cpu_s, reading.memory_bytes) == (1.5, 3072)
    # What is not there (a container that ended between the reads) reads as nothing.
    assert cgroup_reading(files, "", "4096\n", "", None) is None
    assert cgroup_files("garbage\n:::\n", root="/cg") is None


@pytest.fixture
def store_with_execution(vh: VhOrch, tmp_path: Path) -> tuple[Any, int]:
    """The installation's real store and one (queued, never run) execution to sample for."""
    from vh_orch.orchestrator.store import Store

    vh("project", "add", "p")
    folder = make_project(tmp_path, "nap", "- step:\n    name: nap\n    image: none\n    command: sleep 1\n")
    execution_id = vh.run_json("nap", "--project", "p", "--adhoc", str(folder))["id"]
    return Store(f"sqlite:///{vh.home / 'state.db'}"), execution_id


def in_session(session: int) -> list[str]:
    """The live processes of a session (not ended, or ended and reaped)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[3] == str(session) and fields[0] not in ("Z", "X"):
            found.append(pid)
    return found


def test_the_sampler_reads_a_process_session_and_the_gpus_it_was_given(
        store_with_execution: tuple[Any, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from vh_orch.bootstrap.usage import Probe
    from vh_orch.orchestrator.utilization import Sampler, Watched

    store, execution_id = store_with_execution
    monkeypatch.setenv("PATH", f"{FAKE_GPU}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NVIDIA_GPUS", "4")
    monkeypatch.setenv("FAKE_NVIDIA_UTIL", "55")
    # A command in a session of its own, as the process runtime starts one: a shell whose child
    # holds 60 MB and burns CPU.
    child = "b = b'x' * (60 * 1024 * 1024)\nprint('ready', flush=True)\nwhile True: pass\n"
    proc = subprocess.Popen(["sh", "-c", f'{sys.executable} -c "$0"', child], start_new_session=True,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        watched = [Watched(execution_id, 1, Probe("session", str(proc.pid)), None, (1, 3))]
        sampler = Sampler(store, lambda: watched)

        def ticked(n: int) -> list[Any]:
            sampler.tick()
            rows = store.utilization_of(execution_id)
            return rows if len(rows) >= n else []

        eventually("a sample of the running child", lambda: ticked(1))
        time.sleep(0.3)
        rows = eventually("a second sample", lambda: ticked(2))
        # Given no GPU: no GPU readings (nvidia-smi is not asked).
        watched[0] = Watched(execution_id, 1, Probe("session", str(proc.pid)), None, ())
        rows = eventually("a third sample", lambda: ticked(3))
        # A driver that broke meanwhile: no GPU readings either, and the sample is stored all the same.
        watched[0] = Watched(execution_id, 1, Probe("session", str(proc.pid)), None, (1, 3))
        monkeypatch.setenv("FAKE_NVIDIA_FAIL", "1")
        rows = eventually("a fourth sample", lambda: ticked(4))
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    eventually("every process of its session to end", lambda: not in_session(proc.pid))
    assert len(rows) == 4
    assert rows[1].cpu_percent is not None and rows[1].cpu_percent > 20  # it burns (when it gets the CPU)
    assert [r.gpus for r in rows[:2]] == [[
        {"index": 1, "utilization_percent": 55.0, "memory_used_bytes": 1124 * MiB},
        {"index": 3, "utilization_percent": 55.0, "memory_used_bytes": 1324 * MiB}]] * 2
    assert rows[2].gpus is None and rows[3].gpus is None
    assert all(r.memory_bytes >= 60 * MiB for r in rows)
    assert store.get_execution(execution_id).peak_memory_bytes == max(r.memory_bytes for r in rows)
    # Once its command is gone, nothing more is stored for it.
    sampler.tick()
    assert len(store.utilization_of(execution_id)) == 4


def test_samples_stay_bounded_per_execution_and_the_peak_is_kept_on_both_databases(db_url: str) -> None:
    from test_logs import one_execution

    from vh_orch.orchestrator.store.utilization import MAX_SAMPLES, NewSample, Tally

    store, execution = one_execution(db_url)
    execution_id = execution.id
    start = store.clock()
    tallies: dict[int, Tally] = {}
    peak = 0
    for batch in range(0, 2 * MAX_SAMPLES + 10, 100):
        samples = [NewSample(execution_id, 1, start + timedelta(seconds=2 * i), 100.0, 1000 + i)
                   for i in range(batch, batch + 100)]
        peak = max(peak, *(s.memory_bytes for s in samples if s.memory_bytes is not None))
        store.add_utilization(samples, tallies)
        kept = store.utilization_of(execution_id)
        assert len(kept) <= MAX_SAMPLES and tallies[execution_id].count == len(kept)
    assert as_utc(kept[0].time) == start  # the first is kept
    assert store.utilization_of(execution_id, after=kept[-3].time) == kept[-2:]
    assert kept[-1].memory_bytes == peak  # and the last
    assert len(kept) > MAX_SAMPLES // 2
    assert store.get_execution(execution_id).peak_memory_bytes == peak
    # A writer that knows nothing yet (another daemon, after a restart) counts what is there.
    fresh: dict[int, Tally] = {}
    store.add_utilization([NewSample(execution_id, 2, start + timedelta(days=1), None, 5)], fresh)
    assert fresh[execution_id].count == len(kept) + 1 and fresh[execution_id].peak == peak
    assert store.get_execution(execution_id).peak_memory_bytes == peak  # a lower reading changes no peak


def test_the_remote_read_finds_a_containers_cgroup_and_reads_it(docker_images: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The script a remote machine runs, run here (the SSH end-to-end test above runs it over SSH):
    it finds a container's cgroup, reads the files asked for and the GPUs."""
    from vh_orch.bootstrap.usage import REMOTE_SCRIPT, cgroup_files, cgroup_reading, parse_remote_answer

    monkeypatch.setenv("PATH", f"{FAKE_GPU}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NVIDIA_GPUS", "2")
    name = f"vh-orch-usage-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--pull", "never", "--name", name, BUSYBOX, "sleep", "60"],
                   check=True, capture_output=True, timeout=60)
    try:
        def run(*args: str) -> Any:
            out = subprocess.run(["sh", "-c", REMOTE_SCRIPT, "sh", *args], capture_output=True, text=True,
                                 timeout=30, check=True).stdout
            return parse_remote_answer(out)

        found = run("0", f"c:{name}", "c:no-such-container")
        assert set(found.cgroups) == {name} and found.clock > 0 and found.gpus is None
        text, since = found.cgroups[name]
        assert since is not None and 0 < found.clock - since < 120
        files = cgroup_files(text)
        assert files is not None
        answer = run("1", f"f:{files.cpu}", f"f:{files.memory}", f"f:{files.memory_stat}", "f:/nonexistent/file")
        reading = cgroup_reading(files, answer.files[files.cpu], answer.files[files.memory],
                                 answer.files[files.memory_stat], since)
        assert reading is not None and reading.memory_bytes > 0 and reading.cpu_s >= 0
        assert answer.files["/nonexistent/file"] == ""
        assert answer.gpus is not None and [line.split(",")[0] for line in answer.gpus.splitlines()] == ["0", "1"]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
