"""Submit-to-started on the local environment, p50/p95 over N runs, per runtime.

A real `vh-orch serve` runs as a subprocess; each run is submitted in-process (the
same code `exec run` calls, then the same wake-up), and measured from just before the
submission to (a) the `started` status and (b) the first line the command printed,
which includes starting the container. Beside it: a bare `docker run --rm` of the
same image printing one line, measured in the same run. Goal: p50 <= 0.5 s.

    .venv/bin/python bench/submit_to_started.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import fresh_home, percentile, print_table, project_folder

from vh_orch.bootstrap.runtimes import docker_available
from vh_orch.orchestrator.wakeup import notify_daemon
from vh_orch.orchestrator.submit import SubmitRequest, submit

IMAGE = "vh-orch/busybox:test"
YAML = f"- step:\n    name: hello\n    image: {IMAGE}\n    command: echo started\n"


def bare_docker(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--pull", "never", IMAGE, "echo", "started"],
                       stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def measure(runtime: str, runs: int) -> tuple[list[float], list[float]]:
    settings, store = fresh_home(f"start-{runtime}")
    store.update_environment("local", {}, {"runtime": runtime})
    folder = project_folder(settings, YAML)
    env = dict(os.environ, VH_ORCH_HOME=str(settings.home), VH_ORCH_LISTEN="127.0.0.1:0")
    exe = str(Path(sys.executable).parent / "vh-orch")
    log = open(settings.home / "serve.log", "wb")
    daemon = subprocess.Popen([exe, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"daemon started" not in (settings.home / "serve.log").read_bytes():
            assert time.monotonic() < deadline and daemon.poll() is None, "vh-orch serve did not start"
            time.sleep(0.05)
        to_status, to_line = [], []
        for _ in range(runs + 1):  # the first run warms caches and is not counted
            t0 = datetime.now(UTC)
            execution = submit(store, settings, SubmitRequest(project="bench", step="hello", adhoc=folder))
            notify_daemon(settings)
            deadline = time.monotonic() + 60
            while True:
                current = store.get_execution(execution.id)
                lines = [e for e in store.events_after(execution.id, 0) if e.kind == "log"]
                if current.status == "complete" and lines:
                    break
                assert current.status not in ("error", "stopped"), current.status_reason
                assert time.monotonic() < deadline, "execution did not finish"
                time.sleep(0.01)
            to_status.append((current.started_at - t0).total_seconds())
            to_line.append((lines[0].time - t0).total_seconds())
        return to_status[1:], to_line[1:]
    finally:
        daemon.terminate()
        daemon.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rows = []

    def row(name: str, values: list[float]) -> list[object]:
        return [name, f"{percentile(values, 50):.3f}", f"{percentile(values, 95):.3f}", f"{max(values):.3f}"]

    status, line = measure("process", args.runs)
    rows += [row("process: submit -> started", status), row("process: submit -> first log line", line)]
    if docker_available()[0]:
        status, line = measure("docker", args.runs)
        rows += [row("docker: submit -> started", status), row("docker: submit -> first log line", line)]
        rows.append(row("bare `docker run --rm` (whole run)", bare_docker(args.runs)))
    print_table(f"submit-to-started, local environment, {args.runs} runs (seconds)",
                ["measure", "p50", "p95", "max"], rows)


if __name__ == "__main__":
    main()
