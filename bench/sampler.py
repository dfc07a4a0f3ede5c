"""What sampling hardware use costs the daemon: its CPU with 100 running executions, sampling off
and on (every 2 s, the default), measured in the same run, on the process runtime and in Docker.

For each runtime, one `vh-orch serve` runs 100 executions that sleep (a fake environment whose
one machine is this host, 100 slots), first with VH_ORCH_UTILIZATION_INTERVAL_S=0, then with 2;
the daemon's own CPU time (utime + stime of the serve process) is read over a window once all of
their commands run (every container up) and 10 s more have passed. Beside it, the sampler alone: the same Sampler over the same 100 executions in this
process, its CPU per tick (reads, and the batch written to SQLite).

    .venv/bin/python bench/sampler.py [--executions 100] [--window 30] [--runtimes process,docker]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from _common import print_table, project_folder
from _world import World, wait_for

from vh_orch.bootstrap.runtimes import PID_FILE, container_name
from vh_orch.bootstrap.usage import Probe
from vh_orch.orchestrator.utilization import Sampler, Watched

YAML = "- step: {name: nap, image: vh-orch/busybox:test, command: 'sleep 900'}\n"
TICKS = 20


def daemon_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watched(world: World, runtime: str) -> list[Watched]:
    """What the daemon's sampler reads for the executions that run now (found as the runtimes name them)."""
    found = []
    cluster = world.store.cluster_id()
    for e in world.store.executions_in(["started"]):
        assert e.id is not None
        if runtime == "docker":
            probe = Probe("container", container_name(cluster, e.id))
        else:
            pid_file = world.settings.executions_dir / str(e.id) / str(e.attempt) / PID_FILE
            try:
                probe = Probe("session", pid_file.read_text().strip())
            except OSError:  # not started yet
                probe = Probe("session", "")
        found.append(Watched(e.id, e.attempt, probe, None))
    return found


def measure(runtime: str, executions: int, window: float, interval: str) -> dict[str, float]:
    env = {"name": "here", "cloud": "fake", "max_scale": 1, "slots": executions, "idle_timeout": "1h",
           "pull_policy": "never", "fake": {"boot_seconds": 0, "runtime": runtime}}
    world = World(f"sampler-{runtime}-{interval}", None, [env])
    try:
        world.folder = project_folder(world.settings, YAML)
        world.env["VH_ORCH_UTILIZATION_INTERVAL_S"] = interval
        world.start(1)
        world.queue("nap", executions)
        wait_for(f"{executions} executions to run", lambda: running(world, runtime) == executions, timeout=900,
                 every=1)
        time.sleep(10)  # the starts settle (the last containers' clients, the first samples)
        pid = world.replicas[0].process.pid
        samples_before = _samples(world)
        cpu0, t0 = daemon_cpu_s(pid), time.monotonic()
        time.sleep(window)
        cpu1, t1 = daemon_cpu_s(pid), time.monotonic()
        result = {"daemon_percent": (cpu1 - cpu0) / (t1 - t0) * 100,
                  "samples_per_s": (_samples(world) - samples_before) / (t1 - t0)}
        if interval != "0":
            items = watched(world, runtime)
            sampler = Sampler(world.store, lambda: items)
            sampler.tick()  # the first finds where every container's accounting lives
            cpu = time.process_time()
            for _ in range(TICKS):
                sampler.tick()
            result["tick_ms"] = (time.process_time() - cpu) / TICKS * 1000
        return result
    finally:
        world.stop()


def running(world: World, runtime: str) -> int:
    """How many executions' commands run now: containers up, or process-runtime commands past their start."""
    if runtime == "docker":
        out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=vh-orch.cluster={world.store.cluster_id()}",
                              "--filter", "status=running"], capture_output=True, text=True, timeout=60).stdout
        return len(out.split())
    return sum(1 for w in watched(world, runtime) if w.probe.key)


def _samples(world: World) -> int:
    with world.store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM utilization_sample").scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--window", type=float, default=30.0, help="seconds the daemon's CPU is read over")
    parser.add_argument("--runtimes", default="process,docker")
    args = parser.parse_args()
    rows, figures = [], {}
    for runtime in args.runtimes.split(","):
        off = measure(runtime, args.executions, args.window, "0")
        on = measure(runtime, args.executions, args.window, "2")
        figures[runtime] = {"off": off, "on": on}
        rows.append([runtime, args.executions, f"{off['daemon_percent']:.1f}", f"{on['daemon_percent']:.1f}",
                     f"{on['daemon_percent'] - off['daemon_percent']:+.1f}", f"{on['samples_per_s']:.1f}",
                     f"{on['tick_ms']:.1f}", f"{on['tick_ms'] / 2000 * 100:.2f}"])
    print_table(f"daemon CPU (% of one core) with {args.executions} running executions, over {args.window:g} s",
                ["runtime", "executions", "no sampling", "sampling every 2 s", "difference", "samples/s",
                 "one tick alone (ms CPU)", "tick per 2 s (% core)"], rows)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
