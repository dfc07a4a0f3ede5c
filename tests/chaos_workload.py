"""The chaos suite's workload: executions whose every line, metadata point and output is known.

The command prints `line 1..N` on stdout and `err 1..N` on stderr with small sleeps between
(so kills land mid-run), then a JSON metadata line, then writes three outputs: the numbers
1..N, a blob of `x` bytes, and a copy of its input (a seeded random file, so an input that
travelled wrong shows). Under the process runtime it also records its start and end with its
pid, and takes a lock for as long as it runs: an attempt that finds the lock taken was started
while an earlier one still ran, and says so in a file of its own.

A pipeline (`chaos-chain`) runs the same command in three nodes: `first` (no input), then in
parallel `left` on first's numbers and `right` on first's blob and numbers (two edges into one
input), so each node's outputs are known too (PipelineJob.expected).
"""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chaos_check import Expected
from conftest import VhOrch

IMAGE = "vh-orch/busybox:test"
PAUSE_S = 0.05

VALOHAI_YAML = f"""
- step:
    name: chaos
    image: {IMAGE}
    command: sh chaos.sh {{parameter-value:lines}} {{parameter-value:pause}} {{parameter-value:kb}}
    parameters:
      - {{name: lines, type: integer}}
      - {{name: pause, type: float, default: {PAUSE_S}}}
      - {{name: kb, type: integer, default: 1}}
    inputs:
      - {{name: data}}
- step:
    name: chaos-node
    image: {IMAGE}
    command: sh chaos.sh {{parameter-value:lines}} {{parameter-value:pause}} {{parameter-value:kb}}
    parameters:
      - {{name: lines, type: integer}}
      - {{name: pause, type: float, default: {PAUSE_S}}}
      - {{name: kb, type: integer, default: 1}}
    inputs:
      - {{name: data, optional: true}}
- pipeline:
    name: chaos-chain
    parameters:
      - name: lines
        targets: [first.parameter.lines, left.parameter.lines, right.parameter.lines]
        default: 10
    nodes:
      - {{name: first, type: execution, step: chaos-node}}
      - {{name: left, type: execution, step: chaos-node}}
      - {{name: right, type: execution, step: chaos-node}}
    edges:
      - [first.output.lines.txt, left.input.data]
      - [first.output.lines.txt, right.input.data]
      - [first.output.blob.bin, right.input.data]
"""

SCRIPT = r"""set -e
n=$1; pause=$2; kb=$3
trace=
if [ -n "${CHAOS_DIR:-}" ] && [ -d "$CHAOS_DIR" ]; then
  trace="$CHAOS_DIR/$VH_EXECUTION_ID"
  exec 9>>"$trace.lock"
  if ! flock -n 9; then echo "pid $$ at $(date +%s.%N)" >> "$trace.overlap"; fi
  echo "start $$ $(date +%s.%N)" >> "$trace.trace"
fi
i=1
while [ "$i" -le "$n" ]; do
  echo "line $i"
  echo "err $i" >&2
  sleep "$pause"
  i=$((i + 1))
done
echo "{\"chaos\": $VH_EXECUTION_ID, \"lines\": $n}"
seq 1 "$n" > "$VH_OUTPUTS_DIR/lines.txt"
head -c $((kb * 1024)) /dev/zero | tr '\0' x > "$VH_OUTPUTS_DIR/blob.bin"
if [ -d "$VH_INPUTS_DIR/data" ]; then cat "$VH_INPUTS_DIR"/data/* > "$VH_OUTPUTS_DIR/input.bin"
else : > "$VH_OUTPUTS_DIR/input.bin"; fi
if [ -n "$trace" ]; then echo "end $$ $(date +%s.%N)" >> "$trace.trace"; fi
"""


@dataclass(frozen=True)
class Job:
    env: str
    lines: int
    blob_kb: int
    submit_at: float  # seconds into the run; 0: at once, while the first daemon starts

    def expected(self, input_sha: str) -> Expected:
        numbers = "".join(f"{i}\n" for i in range(1, self.lines + 1)).encode()
        return Expected(self.lines, {
            "lines.txt": hashlib.sha256(numbers).hexdigest(),
            "blob.bin": hashlib.sha256(b"x" * (self.blob_kb * 1024)).hexdigest(),
            "input.bin": input_sha,
        })

    def describe(self) -> str:
        when = "at the start" if not self.submit_at else f"at {self.submit_at:.1f} s"
        return f"{self.env}: {self.lines} lines, {self.blob_kb} KiB blob, submitted {when}"


@dataclass(frozen=True)
class PipelineJob:
    """The chaos-chain pipeline: where it runs and how many lines each node prints."""

    env: str
    lines: int

    def expected(self, node: str) -> Expected:
        numbers = "".join(f"{i}\n" for i in range(1, self.lines + 1)).encode()
        blob = b"x" * 1024
        inputs = {"first": b"", "left": numbers, "right": blob + numbers}  # data/* in name order
        return Expected(self.lines, {
            "lines.txt": hashlib.sha256(numbers).hexdigest(),
            "blob.bin": hashlib.sha256(blob).hexdigest(),
            "input.bin": hashlib.sha256(inputs[node]).hexdigest(),
        })

    def describe(self) -> str:
        return f"pipeline chaos-chain on {self.env}: 3 nodes of {self.lines} lines, submitted at the start"


def plan_jobs(rng: random.Random, envs: tuple[str, ...], count: int, lines: tuple[int, int],
              blob_kb: tuple[int, int], late_share: float, window_s: float) -> list[Job]:
    """`count` jobs spread over the environments (each gets one before any gets two)."""
    order: list[str] = []
    while len(order) < count:
        order += rng.sample(list(envs), len(envs))
    jobs = []
    for env in order[:count]:
        late = rng.random() < late_share
        jobs.append(Job(env, rng.randint(*lines), rng.randint(*blob_kb),
                        round(rng.uniform(1, window_s * 0.6), 1) if late else 0.0))
    return jobs


def make_project(folder: Path, seed: int) -> tuple[Path, Path, str]:
    """The ad-hoc project folder and the input file (seeded bytes) with its sha256."""
    project = folder / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "valohai.yaml").write_text(VALOHAI_YAML)
    (project / "chaos.sh").write_text(SCRIPT)
    data = random.Random(seed).randbytes(192 * 1024)
    input_file = folder / "input.bin"
    input_file.write_bytes(data)
    return project, input_file, hashlib.sha256(data).hexdigest()


class Submitter:
    """Submits jobs through the real CLI (`vh-orch exec run ... --json`)."""

    def __init__(self, vh: VhOrch, project: Path, input_file: Path, trace_dir: Path) -> None:
        self.vh, self.project, self.input_file, self.trace_dir = vh, project, input_file, trace_dir
        self.submitted: dict[int, Job] = {}
        self.pipelines: dict[int, PipelineJob] = {}

    def submit(self, job: Job) -> int:
        created = self.vh.run_json(
            "chaos", "--project", "p", "--adhoc", str(self.project), "--env", job.env,
            "-p", f"lines={job.lines}", "-p", f"kb={job.blob_kb}", "-i", f"data={self.input_file}",
            "-e", f"CHAOS_DIR={self.trace_dir}")
        self.submitted[created["id"]] = job
        return created["id"]

    def submit_all(self, jobs: list[Job]) -> None:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(self.submit, jobs))

    def submit_pipeline(self, job: PipelineJob) -> int:
        created = self.vh.json("pipeline", "run", "chaos-chain", "--project", "p", "--adhoc", str(self.project),
                               "--environment", job.env, "-p", f"lines={job.lines}")
        self.pipelines[created["id"]] = job
        return int(created["id"])
