"""Traces of submissions: read and written as CSV (`submit_s,duration_s,environment`), and generated.

Generators (seeded, reproducible): steady Poisson arrivals, bursts of sweeps (many
executions submitted within a minute, hours apart), sparse arrivals, and daily cycles
(busy working hours, quiet nights). Durations are heavy-tailed: lognormal around a
median, capped at a day.
"""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass
from pathlib import Path

from vh_orch.errors import UserInputError

HEADER = ["submit_s", "duration_s", "environment"]
KINDS = ("steady", "bursty", "sparse", "daily")
DAY = 86400.0


@dataclass(frozen=True)
class Submission:
    submit_s: float
    duration_s: float
    environment: str


def read_trace(path: Path) -> list[Submission]:
    """Read and check a trace file; UserInputError naming the line for anything wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserInputError(f"cannot read the trace {path}: {exc.strerror or exc}") from None
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or [h.strip() for h in header] != HEADER:
        raise UserInputError(f"{path}: the first line must be the header {','.join(HEADER)}")
    out = []
    for line, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 3:
            raise UserInputError(f"{path}:{line}: expected 3 fields ({','.join(HEADER)}), got {len(row)}")
        try:
            submit, duration = float(row[0]), float(row[1])
        except ValueError:
            raise UserInputError(f"{path}:{line}: submit_s and duration_s must be numbers of seconds") from None
        if not (math.isfinite(submit) and math.isfinite(duration)) or submit < 0 or duration < 0:
            raise UserInputError(f"{path}:{line}: submit_s and duration_s must be finite and not negative")
        env = row[2].strip()
        if not env:
            raise UserInputError(f"{path}:{line}: the environment is empty")
        out.append(Submission(submit, duration, env))
    if not out:
        raise UserInputError(f"{path}: the trace has no submissions")
    out.sort(key=lambda s: s.submit_s)
    return out


def write_trace(submissions: list[Submission]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for s in submissions:
        writer.writerow([f"{s.submit_s:.3f}", f"{s.duration_s:.3f}", s.environment])
    return buf.getvalue()


def generate(kind: str, executions: int, days: float, environment: str, seed: int = 1,
             median_duration_s: float = 600.0, sigma: float = 1.0) -> list[Submission]:
    """About `executions` submissions over `days` days, shaped by kind."""
    if kind not in KINDS:
        raise UserInputError(f"unknown trace kind {kind!r}; use one of {', '.join(KINDS)}")
    if executions < 1 or days <= 0:
        raise UserInputError("--executions must be 1 or more and --days above 0")
    rng = random.Random(seed)
    span = days * DAY
    times = {"steady": _poisson, "bursty": _bursts, "sparse": _poisson, "daily": _daily}[kind](rng, executions, span)
    mu = math.log(median_duration_s)
    return [Submission(t, min(DAY, rng.lognormvariate(mu, sigma)), environment) for t in sorted(times)]


def _poisson(rng: random.Random, n: int, span: float) -> list[float]:
    rate = n / span
    out, t = [], rng.expovariate(rate)
    while t < span:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def _bursts(rng: random.Random, n: int, span: float) -> list[float]:
    """Hyperparameter sweeps: 10 to 60 executions within a minute, the sweeps Poisson in time."""
    mean_size = 35
    starts = _poisson(rng, max(1, n // mean_size), span)
    return [start + rng.uniform(0, 60) for start in starts for _ in range(rng.randint(10, 60))]


def _daily(rng: random.Random, n: int, span: float) -> list[float]:
    """Working hours: the rate follows a sine over 08:00-20:00 and is zero at night (thinning)."""
    peak = n / span * math.pi  # the sine over half a day averages 2/pi of its peak; half the day is quiet
    out, t = [], 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= span:
            return out
        hour = (t % DAY) / 3600
        level = math.sin(math.pi * (hour - 8) / 12) if 8 <= hour < 20 else 0.0
        if rng.random() < level:
            out.append(t)
