"""Log ingestion: a command printing 1,000,000 lines, from the process to stored rows.

Runs the real runner (the daemon's code path) and compares with the same command's
output piped to /dev/null. Goal: >= 100,000 lines/s on a 2-core machine.

    .venv/bin/python bench/log_ingestion.py [--lines N] [--docker]
"""

from __future__ import annotations

import argparse
import subprocess
import time

from _common import fresh_home, print_table, project_folder

from vh_orch.bootstrap.runtimes import DockerRuntime, ProcessRuntime, docker_available
from vh_orch.orchestrator.runner import ExecutionRunner
from vh_orch.orchestrator.submit import SubmitRequest, submit

IMAGE = "vh-orch/busybox:test"


def command(lines: int) -> str:
    return f"seq 1 {lines} | sed 's/$/ is a log line of the benchmark/'"


def bare(lines: int, docker: bool) -> float:
    argv = ["sh", "-c", command(lines)]
    if docker:
        argv = ["docker", "run", "--rm", "--pull", "never", IMAGE, *argv]
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def through_vh_orch(lines: int, docker: bool) -> tuple[float, int]:
    settings, store = fresh_home("logs")
    yaml = f"- step:\n    name: spam\n    image: {IMAGE}\n    command: \"{command(lines)}\"\n"
    folder = project_folder(settings, yaml)
    execution = submit(store, settings, SubmitRequest(project="bench", step="spam", adhoc=folder))
    env = store.get_environment("local")
    machine = store.ensure_host_machine(env, "bench")
    runtime = DockerRuntime() if docker else ProcessRuntime()
    claimed = store.claim_for_machine(execution.id, machine.id, 1, runtime.name)
    start = time.perf_counter()
    outcome = ExecutionRunner(store, settings, claimed, runtime).run()
    elapsed = time.perf_counter() - start
    assert outcome.status == "complete", outcome
    return elapsed, store.count_events(execution.id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--docker", action="store_true", help="also measure the docker runtime")
    args = parser.parse_args()
    rows = []
    runtimes = [False] + ([True] if args.docker and docker_available()[0] else [])
    for docker in runtimes:
        name = "docker" if docker else "process"
        reference = bare(args.lines, docker)
        elapsed, stored = through_vh_orch(args.lines, docker)
        assert stored == args.lines, f"stored {stored} of {args.lines} lines"
        rows.append([name, "bare: piped to /dev/null", f"{reference:.2f}", f"{args.lines / reference:,.0f}", "-"])
        rows.append([name, "vh-orch: stored rows", f"{elapsed:.2f}", f"{stored / elapsed:,.0f}", f"{stored:,}"])
    print_table(f"log ingestion, {args.lines:,} lines (SQLite, WAL)",
                ["runtime", "path", "seconds", "lines/s", "rows stored"], rows)


if __name__ == "__main__":
    main()
