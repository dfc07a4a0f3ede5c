"""Log ingestion: a command printing 1,000,000 lines, from the process to stored rows, against
the same lines sent to /dev/null, in the same run.

- process: `sh -c CMD` piped to /dev/null, against the runner's process runtime.
- docker: `docker run --rm --pull never IMAGE sh -c CMD > /dev/null`, against the runner's docker
  runtime (an attached `docker run`, its stdout and stderr read by vh-orch).
- ssh, logs: `ssh host docker logs --timestamps C > /dev/null` of a finished container C, against
  vh-orch following the same container's logs over SSH (RemoteContainer: `docker logs -f
  --timestamps` through paramiko) into stored rows.
- ssh, run: `ssh host docker run --rm ... > /dev/null`, against the runner's remote docker
  runtime end to end (folder placed, container started detached, logs followed and stored);
  and the same design by hand (`docker run -d`, then `docker logs -f --timestamps`) as a
  second reference: what dockerd's own log following costs.

The host is a root sshd on 127.0.0.41:22 sharing this machine's Docker engine. Each pair runs
--repeat times, bare and vh-orch taking turns; the table shows medians. Ratio: vh-orch lines/s
over bare lines/s. Run benchmarks one at a time:

    flock /tmp/vh-bench.lock .venv/bin/python bench/log_ingestion.py [--lines N] [--repeat R]
"""

from __future__ import annotations

import argparse
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


def follow_finished(host: BenchHost, container: str, lines: int) -> tuple[float, int]:
    """vh-orch's SSH log path on a finished container: every line from the start to stored rows."""
    from vh_orch.bootstrap.remote import RemoteContainer
    from vh_orch.orchestrator.logs import LogIngester

    _settings, store, execution = new_execution("logs-ssh", lines)
    start = time.perf_counter()
    remote = RemoteContainer(host.transport, container)
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
        container = f"vh-orch-bench-logs-{time.time_ns()}"
        remote_script = " ".join(shlex.quote(a) for a in script)
        try:
            subprocess.run(host.run(f"docker run --name {container} --pull never {IMAGE} {remote_script}"),
                           stdout=subprocess.DEVNULL, check=True)
            add("ssh", "ssh host docker logs --timestamps C > /dev/null", "RemoteContainer logs of C, stored rows",
                median_pair(args.repeat, lambda: timed(host.run(f"docker logs --timestamps {container}")),
                            lambda: follow_finished(host, container, n), n))
            runtime = RemoteDockerRuntime(host.transport, host.workdir)
            add("ssh", "ssh host docker run IMAGE sh -c CMD > /dev/null", "remote docker runtime, stored rows",
                median_pair(args.repeat,
                            lambda: timed(host.run(f"docker run --rm --pull never {IMAGE} {remote_script}")),
                            lambda: through_runner(n, runtime), n))
            # The same design without vh-orch: a detached container, its log followed by dockerd.
            detached = (f"C=$(docker run -d --pull never {IMAGE} {remote_script}) && "
                        "docker logs -f --timestamps $C && docker rm -f $C >/dev/null")
            add("ssh", "ssh host 'docker run -d ...; docker logs -f --timestamps C' > /dev/null",
                "remote docker runtime, stored rows",
                median_pair(args.repeat, lambda: timed(host.run(detached)),
                            lambda: through_runner(n, runtime), n))
        finally:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
            host.close()
    print_table(f"log ingestion, {n:,} lines (SQLite, WAL), median of {args.repeat}",
                ["runtime", "path", "seconds", "lines/s", "ratio"], rows)


if __name__ == "__main__":
    main()
