"""Dispatch: a task of 1,000 trivial children from creation to complete, on the process runtime.

A real `vh-orch serve` runs as a subprocess on the local environment (the process runtime, --slots
executions at once). The task (a grid over one integer parameter, every child `true`) is created
in-process (the code `vh-orch task run` calls, then the same wake-up) and timed until its row says
complete; executions/s is counted from the stored rows (the children's first created_at to their last
ended_at), and the daemon's CPU time per execution (its threads' user + system time over the run, from
/proc: what one execution costs it, whatever else the machine is doing). Reference, in the same run: the same commands run bare by a pool of --slots threads, each
`subprocess.run(["sh", "-c", "true"])` (what starting the processes alone costs at that width).
Goal: >= 100 executions/s.

    .venv/bin/python bench/dispatch.py [--children 1000] [--slots 16] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_home, print_table, project_folder  # noqa: E402

from vh_orch.orchestrator.submit import SubmitRequest  # noqa: E402
from vh_orch.orchestrator.tasks.create import TaskRequest, create_task  # noqa: E402
from vh_orch.orchestrator.wakeup import notify_daemon  # noqa: E402

TIMEOUT_S = 900


def valohai_yaml(children: int) -> str:
    return f"""\
- step:
    name: noop
    image: vh-orch/busybox:test
    command: 'true'
    parameters:
      - {{name: i, type: integer, default: 0}}
- task:
    name: sweep
    step: noop
    type: grid_search
    execution-count: {children}
    execution-batch-size: {children}
    parameters:
      - {{name: i, style: linear, rules: {{start: 1, end: {children}, step: 1}}}}
"""


def run_task(settings, store, folder: Path) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    """(seconds from creation to the task's complete row, executions/s from the stored rows, children)."""
    began = time.perf_counter()
    task = create_task(store, settings, TaskRequest(run=SubmitRequest(project="bench", step="", adhoc=folder),
                                                    name="sweep"))
    notify_daemon(settings)
    deadline = time.monotonic() + TIMEOUT_S
    while (status := store.get_task(task.id).status) not in ("complete", "error", "stopped"):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"the task did not end in {TIMEOUT_S} s"
        time.sleep(0.02)
    took = time.perf_counter() - began
    assert status == "complete", f"the task ended {status}"
    children = store.task_children(task.id)  # type: ignore[arg-type]
    assert all(c.status == "complete" for c in children), "a child did not complete"
    first = min(c.created_at for c in children)
    last = max(c.ended_at for c in children)  # type: ignore[type-var]
    return took, len(children) / (last - first).total_seconds(), len(children)  # type: ignore[operator]


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system, its own threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare(children: int, slots: int) -> float:
    """executions/s of `sh -c true` run by `slots` threads."""
    began = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        list(pool.map(lambda _i: subprocess.run(["sh", "-c", "true"], check=True), range(children)))
    return children / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=16, help="executions at once on the local environment")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    settings, store = fresh_home("dispatch")
    store.update_environment("local", {"slots": args.slots}, {"runtime": "process", "pull_policy": "never"})
    folder = project_folder(settings, valohai_yaml(args.children))
    env = dict(os.environ, VH_ORCH_HOME=str(settings.home), VH_ORCH_LISTEN="127.0.0.1:0")
    log = open(settings.home / "serve.log", "wb")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "vh-orch"), "serve"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    rows = []
    try:
        deadline = time.monotonic() + 60
        while b"daemon started" not in (settings.home / "serve.log").read_bytes():
            assert time.monotonic() < deadline and daemon.poll() is None, "vh-orch serve did not start"
            time.sleep(0.05)
        for _ in range(args.repeat):
            reference = bare(args.children, args.slots)
            cpu_before = cpu_s(daemon.pid)
            took, rate, children = run_task(settings, store, folder)
            cpu_ms = (cpu_s(daemon.pid) - cpu_before) / children * 1000
            rows.append([f"task of {children} children", f"{took:.1f} s", f"{rate:.1f}", f"{cpu_ms:.1f}",
                         f"bare `sh -c true`, {args.slots} at once: {reference:.0f}/s"])
    finally:
        daemon.terminate()
        daemon.wait(60)
    print(f"daemon log: {settings.home / 'serve.log'}")
    print_table(f"Dispatch: trivial executions on the process runtime, {args.slots} at once",
                ["what", "creation to complete", "executions/s (stored rows)", "daemon CPU ms per execution",
                 "reference (same run)"], rows)


if __name__ == "__main__":
    main()
