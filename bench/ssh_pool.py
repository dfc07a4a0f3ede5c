"""The SSH path: submit-to-started on a warm SSH host, and log throughput over SSH.

A root sshd on 127.0.0.2:22 (as in the tests) stands for the machine; it shares this
host's Docker engine. `vh-orch serve` runs a one-host `ssh` environment.

- submit -> first log line, p50/p95 over N runs, beside a bare
  `ssh root@127.0.0.2 docker run --rm IMAGE echo started` (OpenSSH, pinned host key)
  measured in the same run. Goal: p50 <= 1.5 x the bare figure.
- 1,000,000 lines through vh-orch (container start to every row stored), beside a bare
  `ssh root@127.0.0.2 docker logs --timestamps` of a finished container with the same
  output. Goal: >= 0.5 x the bare figure.

    .venv/bin/python bench/ssh_pool.py [--runs 20] [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from _common import SSHBenchHost, percentile, print_table, project_folder

IMAGE = "vh-orch/busybox:test"


def spam(lines: int) -> str:
    return f"seq 1 {lines} | sed 's/$/ is a log line of the benchmark/'"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    world = SSHBenchHost("ssh")
    ssh = world.ssh
    yaml = (f"- step:\n    name: hello\n    image: {IMAGE}\n    command: echo started\n"
            f"- step:\n    name: spam\n    image: {IMAGE}\n    command: \"{spam(args.lines)}\"\n")
    folder = project_folder(world.settings, yaml)
    try:
        world.run("hello", folder)  # the first execution claims and bootstraps the host
        to_line = [world.run("hello", folder)[0] for _ in range(args.runs)]
        bare = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([*ssh, "docker", "run", "--rm", "--pull", "never", IMAGE, "echo", "started"],
                           check=True, stdout=subprocess.DEVNULL)
            bare.append(time.perf_counter() - start)

        _, spammed = world.run("spam", folder)
        spam_s = (spammed.ended_at - spammed.started_at).total_seconds()
        stored = world.store.count_events(spammed.id)
        assert stored == args.lines, stored
        subprocess.run([*ssh, "docker", "rm", "-f", "vh-bench-spam"], capture_output=True)
        subprocess.run([*ssh, "docker", "run", "--name", "vh-bench-spam", "--pull", "never", IMAGE, "sh", "-c",
                        json.dumps(spam(args.lines))], check=True, stdout=subprocess.DEVNULL)
        start = time.perf_counter()
        subprocess.run([*ssh, "docker", "logs", "--timestamps", "vh-bench-spam"], check=True,
                       stdout=subprocess.DEVNULL)
        bare_logs = time.perf_counter() - start
        subprocess.run([*ssh, "docker", "rm", "-f", "vh-bench-spam"], capture_output=True)
    finally:
        world.close()

    def row(name: str, values: list[float]) -> list[object]:
        return [name, f"{percentile(values, 50):.3f}", f"{percentile(values, 95):.3f}"]

    print_table(f"submit-to-started on a warm SSH host, {args.runs} runs (seconds)", ["measure", "p50", "p95"],
                [row("vh-orch: submit -> first log line", to_line), row("bare `ssh host docker run --rm`", bare)])
    print(f"\nratio p50: {percentile(to_line, 50) / percentile(bare, 50):.2f} x the bare figure (goal <= 1.5)")
    print_table(f"logs over SSH, {args.lines:,} lines", ["path", "seconds", "lines/s"], [
        ["vh-orch: container start to every row stored", f"{spam_s:.2f}", f"{args.lines / spam_s:,.0f}"],
        ["bare `ssh host docker logs --timestamps` > /dev/null", f"{bare_logs:.2f}",
         f"{args.lines / bare_logs:,.0f}"],
    ])
    print(f"\nratio: {bare_logs / spam_s:.2f} x the bare figure (goal >= 0.5)")


if __name__ == "__main__":
    main()
