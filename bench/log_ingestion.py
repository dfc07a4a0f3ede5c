"""Log ingestion: a command printing 1,000,000 lines, from the process to stored rows, against
the same lines sent to /dev/null, in the same run.

- process: `sh -c CMD` piped to /dev/null, against the runner's process runtime.
- docker: `docker run --rm --pull never IMAGE sh -c CMD > /dev/null`, against the runner's docker
  runtime (an attached `docker run`, its stdout and stderr read by vh-orch).
- ssh, re-attach: `ssh host cat FILE > /dev/null` of a finished container's relay file (its
  attach output, written on the host by the launcher: remote_logs.py), against vh-orch reading
  the same file over SSH into stored rows, as a daemon that re-attaches does.
- ssh, run: `ssh host docker run --rm ... > /dev/null` (attached), against the runner's remote
  docker runtime end to end (folder placed, container launched through the relay on the host,
  its output followed and stored). Goal: >= 0.8x.

The host is a root sshd on 127.0.0.41:22 sharing this machine's Docker engine. Each pair runs
--repeat times, bare and vh-orch taking turns; the table shows medians. Ratio: vh-orch lines/s
over bare lines/s. Run benchmarks one at a time:

    flock /tmp/vh-bench.lock .venv/bin/python bench/log_ingestion.py [--lines N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import fresh_home, print_table, project_folder

from vh_orch.bootstrap.runtimes import DockerRuntime, ProcessRuntime, docker_available
from vh_orch.orchestrator.runner import ExecutionRunner
from vh_orch.orchestrator.submit import SubmitRequest, submit

IMAGE = "vh-orch/busybox:test"
SSH_HOST = 41  # 127.0.0.41: not one of the tests' hosts, so a test run elsewhere does not collide


def command(lines: int) -> str:
    return f"seq 1 {lines} | sed 's/$/ is a log line of the benchmark/'"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def step_yaml(lines: int) -> str:
    return f"- step:\n    name: spam\n    image: {IMAGE}\n    command: \"{command(lines)}\"\n"


def new_execution(prefix: str, lines: int):  # type: ignore[no-untyped-def]
    settings, store = fresh_home(prefix)
    folder = project_folder(settings, step_yaml(lines))
    execution = submit(store, settings, SubmitRequest(project="bench", step="spam", adhoc=folder))
    return settings, store, execution


def through_runner(lines: int, runtime) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    settings, store, execution = new_execution("logs", lines)
    env = store.get_environment("local")
    machine = store.ensure_host_machine(env, "bench")
    claimed = store.claim_for_machine(execution.id, machine.id, 1, runtime.name)
    start = time.perf_counter()
    outcome = ExecutionRunner(store, settings, claimed, runtime, store.cluster_id()).run()
    elapsed = time.perf_counter() - start
    assert outcome.status == "complete", outcome
    return elapsed, store.count_events(execution.id)


class BenchHost:
    """A root sshd on loopback and a paramiko transport to it (pinned host key)."""

    def __init__(self) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import sshhosts

        from vh_orch.bootstrap.ssh import SSHTarget, SSHTransport

        self.scratch = Path(tempfile.mkdtemp(prefix="vh-orch-bench-logs-ssh-"))
        key = self.scratch / "client_key"
        public = sshhosts.keygen(key, "bench")
        self.host = sshhosts.make_host(self.scratch, SSH_HOST)
        self.host.start(public)
        known = self.scratch / "known_hosts"
        known.write_text(f"{self.host.address} {self.host.host_key}\n")
        self.ssh = ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", f"root@{self.host.address}"]
        self.transport = SSHTransport(SSHTarget(self.host.address, 22, "root", str(key), self.host.host_key))
        self.workdir = str(self.scratch / "workdir")

    def run(self, remote_command: str) -> list[str]:
        return [*self.ssh, remote_command]

    def close(self) -> None:
        self.transport.close()
        self.host.stop()


def relayed_container(host: BenchHost, script: str) -> tuple[str, str]:
    """A container launched as the remote runtime launches one (remote_logs.launch_command), run to its
    end: its id and the folder holding its relay file."""
    from vh_orch.bootstrap.remote_logs import launch_command

    folder = f"{host.workdir}/relayed-{time.time_ns()}"
    subprocess.run(host.run(f"mkdir -p {folder}"), check=True)
    command = launch_command(folder, ["docker", "create", "--pull", "never", IMAGE, *script])
    said = subprocess.run(host.run(command), capture_output=True, text=True, check=True).stdout.split()
    container = said[-1]
    subprocess.run(host.run(f"docker wait {container}"), stdout=subprocess.DEVNULL, check=True)
    return container, folder


def follow_finished(host: BenchHost, container: str, folder: str, lines: int) -> tuple[float, int]:
    """vh-orch reading a finished container's relay file from its start to stored rows (a re-attach)."""
    from vh_orch.bootstrap.remote_logs import RemoteContainer
    from vh_orch.orchestrator.logs import LogIngester

    _settings, store, execution = new_execution("logs-ssh", lines)
    start = time.perf_counter()
    remote = RemoteContainer(host.transport, container, folder)
    ingester = LogIngester(store, execution.id)
    ingester.follow(remote.stdout, "stdout", timestamped=True)
    ingester.follow(remote.stderr, "stderr", timestamped=True)
    code = remote.wait(600)
    assert ingester.close(600) and code == 0, code
    return time.perf_counter() - start, store.count_events(execution.id)


def median_pair(repeat: int, bare: Callable[[], float], ours: Callable[[], tuple[float, int]],
                lines: int) -> tuple[float, float]:
    bare_s, ours_s = [], []
    for _ in range(repeat):
        bare_s.append(bare())
        elapsed, stored = ours()
        assert stored == lines, f"stored {stored} of {lines} lines"
        ours_s.append(elapsed)
    return statistics.median(bare_s), statistics.median(ours_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["process", "docker", "ssh"], action="append",
                        help="measure only these paths (default: all that can run here)")
    args = parser.parse_args()
    n = args.lines
    paths = args.only or ["process", "docker", "ssh"]
    if not docker_available()[0]:
        paths = [p for p in paths if p == "process"]
    rows = []
    load_before = os.getloadavg()[0]

    def add(name: str, bare_what: str, ours_what: str, times: tuple[float, float]) -> None:
        bare_s, ours_s = times
        rows.append([name, f"bare: {bare_what}", f"{bare_s:.2f}", f"{n / bare_s:,.0f}", ""])
        rows.append([name, f"vh-orch: {ours_what}", f"{ours_s:.2f}", f"{n / ours_s:,.0f}", f"{bare_s / ours_s:.2f}x"])

    script = ["sh", "-c", command(n)]
    if "process" in paths:
        add("process", "sh -c CMD > /dev/null", "process runtime, stored rows",
            median_pair(args.repeat, lambda: timed(script), lambda: through_runner(n, ProcessRuntime()), n))
    if "docker" in paths:
        add("docker", "docker run IMAGE sh -c CMD > /dev/null", "docker runtime, stored rows",
            median_pair(args.repeat, lambda: timed(["docker", "run", "--rm", "--pull", "never", IMAGE, *script]),
                        lambda: through_runner(n, DockerRuntime()), n))
    if "ssh" in paths:
        from vh_orch.bootstrap.remote import RemoteDockerRuntime

        host = BenchHost()
        remote_script = " ".join(shlex.quote(a) for a in script)
        container = ""
        try:
            container, folder = relayed_container(host, script)
            add("ssh", "ssh host cat RELAY_FILE > /dev/null", "RemoteContainer re-reading it, stored rows",
                median_pair(args.repeat, lambda: timed(host.run(f"cat {folder}/.vh-output")),
                            lambda: follow_finished(host, container, folder, n), n))
            runtime = RemoteDockerRuntime(host.transport, host.workdir)
            add("ssh", "ssh host docker run IMAGE sh -c CMD > /dev/null", "remote docker runtime, stored rows",
                median_pair(args.repeat,
                            lambda: timed(host.run(f"docker run --rm --pull never {IMAGE} {remote_script}")),
                            lambda: through_runner(n, runtime), n))
        finally:
            if container:
                subprocess.run(["docker", "rm", "-f", container], capture_output=True)
            host.close()
    print_table(f"log ingestion, {n:,} lines (SQLite, WAL), median of {args.repeat}, load average "
                f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
                ["runtime", "path", "seconds", "lines/s", "ratio"], rows)


if __name__ == "__main__":
    main()
