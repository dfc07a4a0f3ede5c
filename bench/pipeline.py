"""Pipelines of 50 trivial nodes, from submission to `complete`, beside 50 executions submitted by hand.

A real `vh-orch serve` runs as a subprocess on the local environment (the process runtime, --slots
executions at once). Each pipeline is started in-process (the code `vh-orch pipeline run` calls,
then the same wake-up) and timed until its row says `complete`:
- chain: node i+1 depends on node i (`dependency` edges): 50 executions one after another, each
  started by the daemon's pass once the one before it completed;
- fan-out: one root, then 49 nodes that each depend on it, run --slots at a time.
The references, measured in the same run on the same daemon:
- by hand, one after another: each execution submitted (`exec run`'s code) once the one before it
  completed, as a person or a script would chain them (the chain's reference);
- by hand, all at once: 50 submitted back to back, timed until the last completes (the fan-out's).
The step is `true` in the process runtime, so what is measured is vh-orch's own overhead.

    .venv/bin/python bench/pipeline.py [--nodes 50] [--slots 4] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import fresh_home, print_table, project_folder

from vh_orch.orchestrator.pipelines.create import PipelineRequest
from vh_orch.orchestrator.pipelines.engine import start_pipeline
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.submit import SubmitRequest, submit
from vh_orch.orchestrator.wakeup import notify_daemon
from vh_orch.settings import Settings

IMAGE = "vh-orch/busybox:test"
TIMEOUT_S = 600


def valohai_yaml(nodes: int) -> str:
    step = f"- step:\n    name: noop\n    image: {IMAGE}\n    command: 'true'\n"

    def pipeline(name: str, edges: list[tuple[int, int]]) -> str:
        lines = [f"- pipeline:\n    name: {name}\n    nodes:"]
        lines += [f"      - {{name: n{i}, type: execution, step: noop}}" for i in range(nodes)]
        lines.append("    edges:")
        lines += [f"      - [n{a}.dependency.*, n{b}.dependency.*]" for a, b in edges]
        return "\n".join(lines) + "\n"

    chain = pipeline("chain", [(i, i + 1) for i in range(nodes - 1)])
    fan = pipeline("fan", [(0, i) for i in range(1, nodes)])
    return step + chain + fan


def wait_for(read: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        status = read()  # type: ignore[operator]
        if status == "complete":
            return
        assert status not in ("error", "stopped"), f"{what} ended {status}"
        assert time.monotonic() < deadline, f"{what} did not complete in {TIMEOUT_S} s"
        time.sleep(0.01)


def run_pipeline(settings: Settings, store: Store, folder: Path, name: str) -> float:
    began = time.perf_counter()
    pipeline = start_pipeline(store, settings, PipelineRequest(
        run=SubmitRequest(project="bench", step="", adhoc=folder), name=name))
    notify_daemon(settings)
    wait_for(lambda: store.get_pipeline(pipeline.id).status, f"pipeline {name}")  # type: ignore[arg-type]
    return time.perf_counter() - began


def by_hand_in_turn(settings: Settings, store: Store, folder: Path, count: int) -> float:
    began = time.perf_counter()
    for _ in range(count):
        execution = submit(store, settings, SubmitRequest(project="bench", step="noop", adhoc=folder))
        notify_daemon(settings)
        wait_for(lambda e=execution: store.get_execution(e.id).status, "an execution")  # type: ignore[misc]
    return time.perf_counter() - began


def by_hand_at_once(settings: Settings, store: Store, folder: Path, count: int) -> float:
    began = time.perf_counter()
    made = []
    for _ in range(count):
        made.append(submit(store, settings, SubmitRequest(project="bench", step="noop", adhoc=folder)))
        notify_daemon(settings)
    for execution in made:
        wait_for(lambda e=execution: store.get_execution(e.id).status, "an execution")  # type: ignore[misc]
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--slots", type=int, default=4, help="executions at once on the local environment")
    parser.add_argument("--repeat", type=int, default=1, help="measure each this many times (the best counts)")
    args = parser.parse_args()
    settings, store = fresh_home("pipeline")
    store.update_environment("local", {"slots": args.slots}, {"runtime": "process", "pull_policy": "never"})
    folder = project_folder(settings, valohai_yaml(args.nodes))
    env = dict(os.environ, VH_ORCH_HOME=str(settings.home), VH_ORCH_LISTEN="127.0.0.1:0")
    exe = str(Path(sys.executable).parent / "vh-orch")
    log = open(settings.home / "serve.log", "wb")
    daemon = subprocess.Popen([exe, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"daemon started" not in (settings.home / "serve.log").read_bytes():
            assert time.monotonic() < deadline and daemon.poll() is None, "vh-orch serve did not start"
            time.sleep(0.05)
        by_hand_in_turn(settings, store, folder, 2)  # warm-up: the snapshot, the runtime, caches
        n = args.nodes
        measures = {
            f"pipeline: chain of {n}": lambda: run_pipeline(settings, store, folder, "chain"),
            f"by hand: {n} executions, each once the one before completed": lambda: by_hand_in_turn(
                settings, store, folder, n),
            f"pipeline: fan-out, 1 root -> {n - 1}": lambda: run_pipeline(settings, store, folder, "fan"),
            f"by hand: {n} executions submitted back to back": lambda: by_hand_at_once(settings, store, folder, n),
        }
        rows = []
        for name, measure in measures.items():
            best = min(measure() for _ in range(args.repeat))
            rows.append([name, f"{best:.1f}", f"{best / n * 1000:.0f}"])
    finally:
        daemon.terminate()
        daemon.wait(60)
    print_table(f"{args.nodes} trivial executions from submission to complete, local environment, process runtime, "
                f"{args.slots} at once (seconds; best of {args.repeat})", ["how", "total s", "per execution ms"], rows)


if __name__ == "__main__":
    main()
