"""Inputs to an SSH host: how long a large input takes the first time and the second (from the
machine's input cache), and how much memory the daemon needs for it.

Each input size runs on a fresh daemon (its own peak RSS) and a fresh workdir (nothing cached,
so the commit travels too), on the sshd host on 127.0.0.2:22 of the tests. The input is a
local file: the first execution sends it into the host's input cache (vh_orch/storage/input_cache.py),
the second finds it there; the container mounts the cached file read-only.

- submit -> first log line (the command prints the input's size at once, with `stat`: busybox's
  `wc -c` reads the whole file, 4.5 s a GB) for the first
  execution (cold cache) and the second (warm), beside a bare `ssh host 'cat > FILE' < INPUT`
  (OpenSSH) of the same file, measured in the same run, right after them; the ratios say how the
  first execution's speed (and its input's own part of it: first - second) compares with the bare
  copy's. Each size runs --repeats times (the input cache emptied before each first run) and the
  table gives medians: on a machine with other work beside it, one run says little;
- the daemon's peak RSS (VmHWM) after the runs, beside an idle daemon's: it must stay flat
  as the input grows (the input is never held in memory).

    .venv/bin/python bench/ssh_inputs.py [--sizes-mb 200,500,1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from statistics import median
from pathlib import Path

from _common import SSHBenchHost, print_table, project_folder

IMAGE = "vh-orch/busybox:test"
STEPS = (f"- step:\n    name: size\n    image: {IMAGE}\n    command: stat -c %s /valohai/inputs/data/input.bin\n"
         "    inputs:\n      - name: data\n"
         f"- step:\n    name: hello\n    image: {IMAGE}\n    command: echo idle\n")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def make_input(path: Path, size_mb: int) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    with path.open("wb") as fh:
        for i in range(size_mb):
            fh.write(i.to_bytes(4, "big") + block[4:])


def one_size(size_mb: int, repeats: int) -> list[object]:
    world = SSHBenchHost(f"inputs{size_mb}")
    try:
        folder = project_folder(world.settings, STEPS)
        data = world.scratch / "input.bin"
        make_input(data, size_mb)
        world.run("hello", folder)  # claims and bootstraps the host; the daemon's idle footprint
        idle = peak_rss_mb(world.daemon.pid)
        first, second, bare = [], [], []
        for _ in range(repeats):
            # An empty input cache for each first run; the bare copy right after it, so that both see
            # the same load on the machine.
            shutil.rmtree(world.scratch / "workdir" / "input-cache", ignore_errors=True)
            for runs in (first, second):
                subprocess.run(["sync"], check=True)  # the previous writes are on disk: each run is timed alone
                seconds, execution = world.run("size", folder, inputs={"data": [str(data)]}, timeout=1800)
                lines = [e.text for e in world.store.events_after(execution.id, 0) if e.kind == "log"]
                assert lines and lines[0].split()[0] == str(size_mb << 20), lines
                runs.append(seconds)
            subprocess.run(["sync"], check=True)
            start = time.perf_counter()
            with data.open("rb") as fh:
                subprocess.run([*world.ssh, f"cat > {world.scratch}/bare-copy.bin"], stdin=fh, check=True)
            bare.append(time.perf_counter() - start)
            subprocess.run([*world.ssh, f"rm -f {world.scratch}/bare-copy.bin"], check=True)
        peak = peak_rss_mb(world.daemon.pid)
    finally:
        world.close()
        shutil.rmtree(world.scratch, ignore_errors=True)  # the input and the host's cache: gigabytes
    f, s, b = median(first), median(second), median(bare)
    own = median(x - y for x, y in zip(first, second))
    return [f"{size_mb} MB", f"{f:.2f}", f"{s:.2f}", f"{own:.2f}", f"{b:.2f}",
            f"{median(y / x for x, y in zip(first, bare)):.2f}x",
            f"{median(y / (x - z) for x, z, y in zip(first, second, bare)):.2f}x",
            f"{size_mb / f:.0f}", f"{idle:.0f}", f"{peak:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", default="200,500,1024")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each size; the table gives medians")
    args = parser.parse_args()
    rows = [one_size(int(size), args.repeats) for size in args.sizes_mb.split(",")]
    print_table(f"an SSH host: submit -> first log line with one input file, first and second time, beside a bare "
                f"`cat FILE | ssh host 'cat > f'`, and the daemon's memory (medians of {args.repeats})",
                ["input", "first s", "second s (cached)", "input's own s", "bare ssh cat s", "bare/first",
                 "bare/input's own", "first MB/s", "daemon idle RSS MB", "daemon peak RSS MB"], rows)
    print("\nThe first time includes sending the input into the host's cache (size and sha256 checked "
          "there); the second only the check of the entry (a stat). The container mounts the entry read-only "
          "both times. Both include the commit, the config and starting the container; the bare figure moves "
          "the file alone. input's own = first - second: what sending the input adds. bare/first and "
          "bare/input's own are speeds relative to the bare copy (1.00x: as fast), medians of each repeat's "
          "ratio (the bare copy runs right after its repeat's first and second runs).")


if __name__ == "__main__":
    main()
