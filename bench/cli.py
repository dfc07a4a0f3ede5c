"""How long the read-only CLI commands take, start to exit, beside a bare `python -c pass`.

A throw-away home is created with the real `vh-orch init`, then filled through the
Store (no daemon): a project, a fake-cloud environment with machines and a launch
failure, and ~200 executions in every status, with log lines, metadata and outputs.
Each command runs N times as a subprocess (one uncounted warm-up each, the commands
taken in turns so that background load spreads over all of them).
Goal: p50 <= 0.25 s for `exec list --json`, `exec info ID --json` and `status --json`.

    .venv/bin/python bench/cli.py [--runs 15] [--executions 200] [--exe PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import percentile, print_table

from vh_orch.config.environments import parse_entry
from vh_orch.orchestrator.models import Execution, Machine, Output
from vh_orch.orchestrator.store import LogLine, Store
from vh_orch.settings import Settings
from vh_orch.timeutil import utcnow

YAML = """\
- step:
    name: train
    image: python:3.12
    command: python train.py {parameters}
    parameters:
      - {name: epochs, type: integer, default: 10}
      - {name: learning_rate, type: float, default: 0.001}
"""
# How the executions end up, roughly as on a busy day: most done, some failed or stopped, a few in flight.
STATUSES = ["complete"] * 14 + ["error"] * 2 + ["stopped", "queued", "started", "created"]
LOG_LINES = 60  # per finished execution, every sixth a metadata point


def fill(store: Store, executions: int) -> int:
    """A realistic database; returns the id of an execution worth `exec info`."""
    rng = random.Random(1)
    project = store.create_project("demo", None, None)
    commit = store.get_or_create_commit(project.id, "git", "0" * 40, YAML, ref="main")  # type: ignore[arg-type]
    spec = parse_entry({"name": "gpu", "cloud": "fake", "max_scale": 4, "price_per_hour": 0.9}, "bench")
    store.save_environment(spec.name, spec.cloud, spec.columns, spec.settings)
    gpu = store.get_environment("gpu")
    local = store.get_environment("local")
    for state in ("ready", "busy", "busy", "terminated", "failed", "lost"):
        machine = store.create_machine(gpu, "zone-a", "g4dn.xlarge")
        with store.write() as s:
            row = s.get_one(Machine, machine.id)
            row.state = state
            s.add(row)
    store.record_launch_failure(gpu.id, "capacity", "zone-b", "g4dn.xlarge",  # type: ignore[arg-type]
                                "InsufficientInstanceCapacity: no capacity in zone-b")
    detailed = 0
    for n in range(executions):
        status = STATUSES[n % len(STATUSES)]
        epochs = rng.choice([5, 10, 20])
        lr = rng.choice([0.1, 0.01, 0.001])
        env = gpu if n % 3 else local
        execution = store.create_execution(Execution(
            project_id=project.id, commit_id=commit.id, step="train",  # type: ignore[arg-type]
            command=f"python train.py --epochs={epochs} --learning_rate={lr}",
            parameters={"epochs": epochs, "learning_rate": lr}, environment_id=env.id,  # type: ignore[arg-type]
            image="python:3.12", pull_policy="if-missing", user="bench", title=f"sweep {n // 20}",
            time_limit_s=3600.0, counter=0,
        ))
        eid: int = execution.id  # type: ignore[assignment]
        if status == "created":
            with store.write() as s:  # held back by quota, as `created` rows are
                row = s.get_one(Execution, eid)
                row.status = "created"
                row.queued_at = None
                s.add(row)
            continue
        if status == "queued":
            continue
        if status == "stopped" and n % 2:
            store.set_status(eid, "stopped", reason="stopped by request")
            continue
        store.set_status(eid, "started")
        lines = []
        for i in range(LOG_LINES):
            if i % 6 == 5:
                point = {"epoch": i // 6, "loss": round(rng.random(), 4), "accuracy": round(rng.random(), 4)}
                lines.append(LogLine(utcnow(), "stdout", json.dumps(point), metadata=point))
            else:
                lines.append(LogLine(utcnow(), "stderr" if i % 10 == 3 else "stdout",
                                     f"step {i}: {'x' * rng.randint(20, 120)}"))
        store.append_log(eid, lines)
        if status == "started":
            continue
        outputs = [Output(id=uuid.uuid4().hex, execution_id=eid, name=name, size=rng.randint(1, 10**8),
                          sha256=uuid.uuid4().hex * 2, uri=f"file:///data/{eid}/{name}")
                   for name in ("model.pt", "metrics/summary.json")]
        reason = {"error": "the command exited with code 3", "stopped": "stopped by request"}.get(status)
        store.finish_execution(eid, execution.attempt, status, reason, {"complete": 0, "error": 3}.get(status),
                               outputs)
        detailed = eid
    return detailed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--exe", default=str(Path(sys.executable).parent / "vh-orch"), help="the vh-orch to time")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="vh-orch-bench-cli-"))
    env = dict(os.environ, VH_ORCH_HOME=str(home), NO_COLOR="1", COLUMNS="120")
    env.pop("VH_ORCH_DB", None)
    subprocess.run([args.exe, "init"], env=env, check=True, capture_output=True)
    store = Store(Settings.from_env(env).db_url)
    started = time.perf_counter()
    info_id = fill(store, args.executions)
    store.engine.dispose()
    print(f"filled {home} with {args.executions} executions in {time.perf_counter() - started:.1f} s")

    commands = {
        "python -c pass (reference)": [sys.executable, "-c", "pass"],
        "vh-orch exec list --json": [args.exe, "exec", "list", "--json"],
        f"vh-orch exec info {info_id} --json": [args.exe, "exec", "info", str(info_id), "--json"],
        "vh-orch status --json": [args.exe, "status", "--json"],
        "vh-orch --help": [args.exe, "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for run in range(args.runs + 1):  # run 0 warms the caches and is not counted
        for name, argv in commands.items():
            start = time.perf_counter()
            proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{name} exited {proc.returncode}:\n{proc.stderr.decode()}")
            if run:
                times[name].append(elapsed)
    reference = percentile(times["python -c pass (reference)"], 50)
    print_table(
        f"CLI start-to-exit, {args.runs} runs each, {args.executions} executions (seconds)",
        ["command", "p50", "p95", "p50 - reference"],
        [[name, f"{percentile(t, 50):.3f}", f"{percentile(t, 95):.3f}", f"{percentile(t, 50) - reference:+.3f}"]
         for name, t in times.items()],
    )


if __name__ == "__main__":
    main()
