"""The long chaos run: many seeded runs of tests/chaos.py, every kind of fault, 50+ kill points.

Each run is a fresh vh-orch home with the fake cloud (docker and process runtimes) and SSH
hosts (plain, behind a connection-cutting proxy, on a Docker engine of its own that gets
restarted), a workload submitted through the CLI, and faults: SIGKILL/SIGTERM of
`vh-orch serve` at random moments, each named failpoint, cut SSH connections, engine
restarts, full disks (tmpfs) under a datastore and a workdir, SQLite held busy. Then the
invariants are checked (tests/chaos_check.py). Run i uses seed SEED+i and the i-th config of
the rotation; a violation prints its run's report and the command that replays it.

    .venv/bin/python bench/chaos.py [--seed N] [--runs 8] [--config NAME]   # as root

Goal: 0 violations.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import print_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402,F401  (the network guard, fake cloud credentials for this process)
import chaos  # noqa: E402
from chaos_world import World  # noqa: E402

CONFIGS = {
    config.name: config for config in (
        chaos.Config("storm", executions=8, kills=8, armed_share=0.4, cuts=4, engine_restarts=2, busy=3,
                     busy_s=(2.0, 25.0), window_s=40.0),
        chaos.Config("disk", envs=("fake-docker", "fake-process", "ssh-plain", "ssh-cut"), executions=7, kills=5,
                     cuts=2, busy=1, full_disk=True, window_s=30.0),
        chaos.Config("end-points", executions=6, kills=2, failpoints=(
            "pipeline-work-made", "pipeline-node-ended", "after-outputs-uploaded", "after-result-recorded", "process-started", "after-outputs-uploaded",
            "after-result-recorded", "after-outputs-uploaded:2", "after-result-recorded:2"), window_s=20.0),
        chaos.Config("along-the-way", executions=6, kills=2, failpoints=(
            "launch-row-written", "launch-call-returned", "bootstrap-step", "input-transfer", "container-started",
            "process-started", "log-follow:2", "output-upload", "log-follow:5", "output-upload:3"), window_s=20.0),
    )
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="the first run's seed (default: random, printed)")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None,
                        help="only this config (default: all, in turn)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    rotation = [CONFIGS[args.config]] if args.config else list(CONFIGS.values())
    print(f"chaos bench: seed {seed}, {args.runs} run(s)", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="vh-orch-bench-chaos-"))
    world = World(scratch / "world")
    world.start()
    reports = []
    began = time.monotonic()
    try:
        for i in range(args.runs):
            config = rotation[i % len(rotation)]
            report = chaos.run(seed + i, config, world, scratch / f"run{i}")
            reports.append(report)
            print(f"run {i}: {config.name} seed {seed + i}: {report.kill_points} kill points, "
                  f"{dict(report.faults)}, {dict(report.statuses)}, {len(report.violations)} violation(s), "
                  f"{report.seconds:.0f} s", flush=True)
            if report.violations:
                print(report.text())
                print(f"replay: .venv/bin/python bench/chaos.py --seed {seed + i} --runs 1 --config {config.name}")
    finally:
        world.stop()
    summarize(reports, seed, time.monotonic() - began, world.notes)


def summarize(reports: list[chaos.Report], seed: int, seconds: float, notes: list[str]) -> None:
    kills, faults, statuses, fired, missed = Counter(), Counter(), Counter(), Counter(), Counter()
    for report in reports:
        kills.update(report.kills)
        faults.update(report.faults)
        statuses.update(report.statuses)
        fired.update(p.partition(":")[0] for p in report.fired)
        missed.update(p.partition(":")[0] for p in report.missed)
    violations = sum(len(r.violations) for r in reports)
    print_table(f"chaos, seed {seed}: {len(reports)} runs in {seconds / 60:.1f} min", ["measure", "value"], [
        ["runs", len(reports)],
        ["kill points", f"{sum(kills.values())} ({', '.join(f'{k} {v}' for k, v in sorted(kills.items()))})"],
        *[[f"  failpoint {name}", f"fired {fired[name]}, not reached {missed[name]}"] for name in chaos.FAILPOINTS],
        *[[f"faults: {kind}", n] for kind, n in sorted(faults.items())],
        ["executions", f"{sum(statuses.values())} ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})"],
        ["violations", violations],
    ])
    for note in notes:
        print(f"note: {note}")
    if violations:
        sys.exit(1)


if __name__ == "__main__":
    main()
