"""valohai.yaml's resources and no-output-timeout hold, for real: a run that outgrows its memory limit is
killed and its reason says so (Docker on this host and over SSH; the process runtime from the kernel's
OOM-kill count), a step's minimum this host cannot meet is refused, and a run that prints nothing for its
no-output-timeout is stopped, while one that keeps printing is not, even across a daemon restart.
(The CPU and memory limits on the container itself are checked with `docker inspect` in
test_security_containers.py and test_security_containers_ssh.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BUSYBOX, PYTHON_IMAGE, SSHPool, VhOrch, eventually, installation, make_project

ALLOCATE = "python3 -c \"x = b'x' * (400 << 20); print('survived')\""
STEPS = f"""
- step:
    name: hungry
    image: {PYTHON_IMAGE}
    command: {ALLOCATE}
    resources:
      memory: {{max: 100}}
- step:
    name: hungry-in-cgroup
    image: {PYTHON_IMAGE}
    command: echo $$ > "$CGROUP/cgroup.procs" && {ALLOCATE}
    environment-variables:
      - name: CGROUP
        default: /nonexistent
- step:
    name: killed
    image: {BUSYBOX}
    command: kill -9 $$
- step:
    name: silent
    image: {BUSYBOX}
    command: echo once && sleep 120
    no-output-timeout: 5
- step:
    name: chatty
    image: {BUSYBOX}
    command: for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 1; done
    no-output-timeout: 3
- step:
    name: big
    image: {BUSYBOX}
    command: echo never
    resources:
      cpu: {{min: 1000}}
- step:
    name: upside-down
    image: {BUSYBOX}
    command: echo never
    resources:
      memory: {{min: 512, max: 256}}
"""


def _write(path: Path, doc: dict) -> str:  # type: ignore[type-arg]
    path.write_text(json.dumps(doc))  # JSON is YAML
    return str(path)


def pool_env(pool: SSHPool, folder: Path, host: int = 0) -> dict:  # type: ignore[type-arg]
    h = pool.hosts[host]
    return {"name": "onprem", "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never",
            "ssh": {"user": "root", "private_key_file": str(pool.client_key), "connect_timeout": "3s",
                    "hosts": [{"address": h.address, "host_key": h.host_key, "workdir": str(folder / "workdir")}]}}


@pytest.fixture(scope="module")
def limits_vh(tmp_path_factory: pytest.TempPathFactory, docker_images: None, ssh_pool: SSHPool) -> Iterator[VhOrch]:
    """One daemon: `local` on Docker, `procs` (this host, the process runtime) and `onprem` (an sshd host)."""
    root = tmp_path_factory.mktemp("limits")
    with installation(root / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        vh("env", "apply", _write(root / "envs.yaml", {"environments": [
            {"name": "procs", "cloud": "local", "local": {"runtime": "process"}}, pool_env(ssh_pool, root)]}))
        vh("project", "add", "p")
        vh.project_dir = make_project(root, "proj", STEPS)  # type: ignore[attr-defined]
        vh.start_daemon()
        yield vh


def submit(vh: VhOrch, *args: str) -> int:
    return vh.run_json(*args, "--project", "p", "--adhoc", str(vh.project_dir))["id"]  # type: ignore[attr-defined]


def log_texts(vh: VhOrch, execution_id: int) -> list[str]:
    out = vh("exec", "logs", str(execution_id), "--json").stdout
    return [e["text"] for e in map(json.loads, out.splitlines()) if e["kind"] == "log"]


# -- memory ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["local", "onprem"])
def test_a_run_past_its_memory_limit_ends_in_error_saying_out_of_memory(limits_vh: VhOrch, env: str) -> None:
    execution = submit(limits_vh, "hungry", "--env", env)
    info = limits_vh.wait(execution, timeout=120)
    assert info["status"] == "error", info
    assert info["status_reason"] == "out of memory: the container was killed at its 100 MB limit", info
    assert info["exit_code"] == 137, info
    assert "survived" not in log_texts(limits_vh, execution)


def test_a_process_the_kernel_killed_for_memory_ends_saying_so(limits_vh: VhOrch) -> None:
    """The process runtime holds a command to no limit: here the command joins a memory cgroup of 100 MB
    that the test made, as if the host had run short, and the kernel's OOM kill is read from its counts."""
    group = _memory_cgroup(100)
    if group is None:
        pytest.skip("no writable memory cgroup on this host (needs root and cgroup v1, or v2 with memory delegated)")
    try:
        execution = submit(limits_vh, "hungry-in-cgroup", "--env", "procs", "-e", f"CGROUP={group}")
        info = limits_vh.wait(execution, timeout=120)
    finally:
        eventually("the test's cgroup to be removed", lambda: _remove(group))
    assert info["status"] == "error", (info, log_texts(limits_vh, execution))
    assert info["status_reason"].startswith("out of memory: the kernel killed the command"), info
    assert "survived" not in log_texts(limits_vh, execution)


def test_a_process_killed_by_anyone_else_is_not_called_out_of_memory(limits_vh: VhOrch) -> None:
    info = limits_vh.wait(submit(limits_vh, "killed", "--env", "procs"))
    assert info["status"] == "error", info
    assert "out of memory" not in info["status_reason"], info
    assert info["exit_code"] in (-9, 137), info


# -- minimums ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("step, said", [
    ("big", f"step 'big': resources.cpu.min: 1000 is more than the {os.cpu_count()} CPUs of this host, "
            "where environment 'local' runs it"),
    ("upside-down", "step 'upside-down': resources.memory.min: 512 is more than its resources.memory.max: 256"),
])
def test_a_minimum_no_machine_can_meet_is_refused_at_submission(limits_vh: VhOrch, step: str, said: str) -> None:
    before = limits_vh.json("exec", "list")
    refused = limits_vh("exec", "run", step, "--project", "p", "--adhoc", str(limits_vh.project_dir),  # type: ignore[attr-defined]
                        check=False)
    assert refused.returncode != 0 and said in refused.stderr, refused.stderr
    assert limits_vh.json("exec", "list") == before


def test_a_minimum_on_a_machine_of_unknown_size_is_accepted(limits_vh: VhOrch) -> None:
    """An SSH host's CPUs are not recorded: the step is queued (and runs), not refused."""
    info = limits_vh.wait(submit(limits_vh, "big", "--env", "onprem"), timeout=120)
    assert info["status"] == "complete", info


# -- no-output-timeout -------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["local", "procs", "onprem"])
def test_a_run_silent_for_its_no_output_timeout_is_stopped_with_the_reason(limits_vh: VhOrch, env: str) -> None:
    execution = submit(limits_vh, "silent", "--env", env)
    info = limits_vh.wait(execution, timeout=120)
    assert info["status"] == "error", info
    assert info["status_reason"] == "no output for 5 s (no-output-timeout); the command was stopped", info
    assert log_texts(limits_vh, execution) == ["once"]


def test_a_run_that_keeps_printing_outlives_its_no_output_timeout(limits_vh: VhOrch) -> None:
    execution = submit(limits_vh, "chatty")
    info = limits_vh.wait(execution)
    assert info["status"] == "complete", info
    assert log_texts(limits_vh, execution) == [f"tick {i}" for i in range(1, 7)]


def test_a_daemon_that_re_attaches_does_not_stop_a_run_that_printed_while_it_was_away(
    vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None
) -> None:
    """The daemon is away longer than the no-output-timeout while the command goes on printing: the
    lines it missed arrive after the re-attach, and the run completes."""
    steps = f"""
- step:
    name: ticking
    image: {BUSYBOX}
    command: i=0; while [ $i -lt 30 ]; do i=$((i + 1)); echo "tick $i"; sleep 0.5; done
    no-output-timeout: 3
"""
    vh("env", "apply", _write(tmp_path / "pool.yaml", {"environments": [pool_env(ssh_pool, tmp_path, host=1)]}))
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", steps)  # type: ignore[attr-defined]
    vh.start_daemon()
    execution = submit(vh, "ticking", "--env", "onprem")
    eventually("its first lines", lambda: len(log_texts(vh, execution)) >= 2, timeout=120)
    vh.stop_daemon(signal.SIGKILL)
    stored = len(log_texts(vh, execution))
    container = f"{vh.cluster_id()}-exec-{execution}"

    def printed_since() -> int:
        out = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60).stdout
        return len(out.splitlines()) - stored

    # Longer than the timeout since the last line the daemon stored (seven lines, half a second apart).
    eventually("the command to print on while no daemon reads it", lambda: printed_since() >= 7)
    vh.start_daemon()
    info = vh.wait(execution, timeout=120)
    assert info["status"] == "complete", f"{info['status']}: {info.get('status_reason')}"
    assert log_texts(vh, execution) == [f"tick {i}" for i in range(1, 31)]


def _memory_cgroup(limit_mb: int) -> Path | None:
    """A memory cgroup of limit_mb (without swap) made for one test, or None where none can be made."""
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "cgroup.procs").exists():
        parent, limits = v1, ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    elif "memory" in _read(Path("/sys/fs/cgroup/cgroup.subtree_control")).split():
        parent, limits = Path("/sys/fs/cgroup"), ["memory.max", "memory.swap.max"]
    else:
        return None
    group = parent / f"vh-orch-test-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
    except OSError:
        return None
    try:
        (group / limits[0]).write_text(str(limit_mb << 20))
        swap = group / limits[1]
        if swap.exists():
            swap.write_text(str(limit_mb << 20) if parent == v1 else "0")
    except OSError:
        _remove(group)
        return None
    return group


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _remove(group: Path) -> bool:
    """Remove a cgroup once no process is in it; whether it is gone."""
    try:
        group.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
