"""How fast `vh-orch simulate` replays a month: 100,000 executions over 30 days (the goal: under 60 s).

Both the adaptive policy and a fixed 5-minute timeout are timed on the same generated
trace (steady Poisson arrivals, lognormal durations with a 10-minute median, an
environment of up to 60 machines booting in 120 s), in this process, one after the other.
"""

from __future__ import annotations

import argparse
import time

from _common import print_table
from vh_orch.config.environments import parse_file_text
from vh_orch.simulation.engine import PolicyChoice, Simulation
from vh_orch.simulation.trace import generate

ENVS = """
environments:
  - name: gpu
    cloud: fake
    max_scale: 60
    idle_timeout: 20m
    price_per_hour: 1.0
    fake: {boot_seconds: 120}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--kind", default="steady")
    args = parser.parse_args()
    specs = parse_file_text(ENVS, "bench")
    trace = generate(args.kind, args.executions, args.days, "gpu", seed=1)
    rows = []
    for policy in ("adaptive", "idle-timeout:5m"):
        started = time.perf_counter()
        result = Simulation(specs, trace, PolicyChoice.parse(policy)).run()
        took = time.perf_counter() - started
        rows.append([policy, f"{len(trace):,}", f"{took:.1f} s", f"{len(trace) / took:,.0f}",
                     f"{result.cost:,.0f}", f"{result.wait_p95_s:.0f} s", "yes" if took < 60 else "NO"])
    print_table(f"simulate: {args.kind}, {len(trace):,} executions over {args.days:g} days",
                ["policy", "executions", "wall time", "executions/s", "cost", "p95 wait", "under 60 s"], rows)


if __name__ == "__main__":
    main()
