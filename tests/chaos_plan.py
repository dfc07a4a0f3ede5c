"""The chaos suite's plans: what a seed decides before a run starts.

A `Config` says how much of each fault a run gets; `make_plan(seed, config, envs)` turns it
into a `Plan`: the workload (which environment, how many lines, how big an output, submitted
when), the daemon's starts in order (armed with a failpoint, or clean and killed after so many
seconds with SIGKILL or SIGTERM) and the timed faults (cut SSH connections, an engine restart,
SQLite held busy, late submissions). The same seed and config give the same plan.
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass
from typing import Any

from chaos_workload import Job, PipelineJob, plan_jobs

ALL_ENVS = ("fake-docker", "fake-process", "ssh-plain", "ssh-cut", "ssh-engine")
FAILPOINTS = ("launch-row-written", "launch-call-returned", "bootstrap-step", "input-transfer", "process-started",
              "container-started", "log-follow", "output-upload", "after-outputs-uploaded", "after-result-recorded",
              "pipeline-work-made", "pipeline-node-ended")
DISK_MB = 8


@dataclass(frozen=True)
class Config:
    name: str
    envs: tuple[str, ...] = ALL_ENVS
    executions: int = 6
    lines: tuple[int, int] = (20, 50)
    blob_kb: tuple[int, int] = (1, 256)
    late_share: float = 0.3  # share of executions submitted while faults fly
    window_s: float = 20.0  # the timed faults fall in this many seconds
    kills: int = 3  # random kills of the daemon
    sigterm_share: float = 0.25
    kill_after_s: tuple[float, float] = (0.0, 5.0)  # a clean daemon runs this long before its kill
    armed_share: float = 0.3  # share of random kills followed by a daemon armed with a random failpoint
    failpoints: tuple[str, ...] = ()  # armed deliberately, one daemon start each, before the kills
    failpoint_wait_s: float = 30.0
    cuts: int = 0
    engine_restarts: int = 0
    busy: int = 0  # SQLite write lock held by another process
    busy_s: tuple[float, float] = (1.0, 5.0)
    full_disk: bool = False  # the fake-docker datastore and the ssh-plain workdir on 8 MiB tmpfs
    settle_s: float = 120.0  # after the faults: every execution final, idle machines retired
    pipeline: bool = True  # the chaos-chain pipeline (four nodes) runs beside the executions


@dataclass(frozen=True)
class Start:
    """One start of the daemon: armed with a failpoint (wait for it to die), or clean and killed
    after `kill_after` seconds with `sig` (None: the last start, which runs on)."""

    failpoint: str | None = None
    kill_after: float | None = None
    sig: int = signal.SIGKILL

    def describe(self) -> str:
        if self.failpoint:
            return f"start armed with {self.failpoint}"
        if self.kill_after is None:
            return "start clean and run on"
        return f"start clean, {signal.Signals(self.sig).name} after {self.kill_after:.2f} s"


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str  # cut | engine | busy | submit
    arg: Any = None


@dataclass
class Plan:
    jobs: list[Job]
    starts: list[Start]
    faults: list[Fault]
    pipeline: PipelineJob | None = None

    def lines(self) -> list[str]:
        return ([f"job {i}: {job.describe()}" for i, job in enumerate(self.jobs)]
                + ([self.pipeline.describe()] if self.pipeline else [])
                + [f"daemon {i}: {s.describe()}" for i, s in enumerate(self.starts)]
                + [f"at {f.at:5.1f} s: {f.kind} {'' if f.arg is None else f.arg}".rstrip() for f in self.faults])


def make_plan(seed: int, config: Config, envs: tuple[str, ...]) -> Plan:
    rng = random.Random(f"{config.name}/{seed}")
    jobs = plan_jobs(rng, envs, config.executions, config.lines, config.blob_kb, config.late_share, config.window_s)
    if config.full_disk:  # more than the disks hold (or than they have left), where they are
        disk_kb = DISK_MB * 1024
        for size, index in zip((disk_kb + rng.randint(256, 2048), rng.randint(disk_kb // 2, disk_kb)),
                               rng.sample(range(len(jobs)), min(2, len(jobs)))):
            env = rng.choice([e for e in ("fake-docker", "ssh-plain") if e in envs] or envs)
            jobs[index] = Job(env, jobs[index].lines, size, jobs[index].submit_at)
    starts = [Start(failpoint=name) for name in config.failpoints]
    for _ in range(config.kills):
        if rng.random() < config.armed_share:
            name = rng.choice(FAILPOINTS)
            starts.append(Start(failpoint=f"{name}:{rng.randint(1, 4 if name == 'log-follow' else 2)}"))
        sig = signal.SIGTERM if rng.random() < config.sigterm_share else signal.SIGKILL
        starts.append(Start(kill_after=round(rng.uniform(*config.kill_after_s), 2), sig=sig))
    starts.append(Start())
    faults = ([Fault(round(rng.uniform(0, config.window_s), 1), "cut", round(rng.uniform(0, 1.5), 2))
               for _ in range(config.cuts)]
              + [Fault(round(rng.uniform(0, config.window_s), 1), "engine", round(rng.uniform(0, 1.5), 2))
                 for _ in range(config.engine_restarts)]
              + [Fault(round(rng.uniform(0, config.window_s), 1), "busy", round(rng.uniform(*config.busy_s), 1))
                 for _ in range(config.busy)]
              + [Fault(job.submit_at, "submit", i) for i, job in enumerate(jobs) if job.submit_at])
    # drawn last, so that the rest of a seed's plan is what it was before pipelines joined
    pipeline = PipelineJob(rng.choice(envs), rng.randint(*config.lines)) if config.pipeline else None
    return Plan(jobs, starts, sorted(faults, key=lambda f: f.at), pipeline)
