"""Who spent what. A machine is billed from its creation to its termination (or now) at its
environment's price per hour; at each instant that cost is shared among the executions that held the
machine then, by their weight (the GPUs they asked for, else 1: one slot); what no execution held
(booting, idle, draining) is its environment's idle cost. Every split therefore adds up to the bill.

Rows in, figures out. The store reads the rows (store/costs.py); the report, the budgets and
`exec info` use the figures. An execution counts for its latest attempt; an earlier attempt's machine
time (a lost spot instance) is that environment's idle time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.timeutil import as_utc, utcnow


@dataclass(frozen=True, slots=True)
class BilledMachine:
    id: int
    environment: str
    price_per_hour: float
    start: datetime
    end: datetime | None  # None: billed until now


@dataclass(frozen=True, slots=True)
class Hold:
    """An execution's latest attempt on a machine."""

    execution_id: int
    machine_id: int
    start: datetime
    end: datetime | None  # None: runs now
    weight: float = 1.0


@dataclass(slots=True)
class Share:
    cost_usd: float = 0.0
    machine_seconds: float = 0.0

    def add(self, cost: float, seconds: float) -> None:
        self.cost_usd += cost
        self.machine_seconds += seconds


@dataclass(slots=True)
class Attribution:
    executions: dict[int, Share] = field(default_factory=dict)
    idle: dict[str, Share] = field(default_factory=dict)  # by environment name
    billed: dict[str, Share] = field(default_factory=dict)  # by environment name: the whole bill

    @property
    def total_usd(self) -> float:
        return sum(s.cost_usd for s in self.billed.values())


HOLDING = ("started", "stopping")  # an execution in these holds its machine now


def billed_machine(machine: Any, environment: str, price_per_hour: float) -> BilledMachine:
    """A machine row (Store's or the quick reader's) as billed from its creation to its termination."""
    return BilledMachine(machine.id, environment, price_per_hour, as_utc(machine.created_at),
                         as_utc(machine.terminated_at) if machine.terminated_at else None)


def hold_of(execution: Any) -> Hold | None:
    """An execution row's latest attempt on its machine; None if it holds none (never started there,
    or requeued since)."""
    if execution.machine_id is None or execution.started_at is None:
        return None
    if execution.status in HOLDING:
        end = None
    elif execution.ended_at is not None:
        end = as_utc(execution.ended_at)
    else:
        return None
    return Hold(execution.id, execution.machine_id, as_utc(execution.started_at), end, weight_of(execution.gpus or 0))


def weight_of(gpus: int) -> float:
    """An execution's claim on its machine: its GPUs, or one slot."""
    return float(max(1, gpus))


def attribute(machines: Iterable[BilledMachine], holds: Iterable[Hold], since: datetime | None,
              until: datetime) -> Attribution:
    """Each machine's cost within [since, until] split among the holds on it, instant by instant."""
    by_machine: dict[int, list[Hold]] = defaultdict(list)
    for hold in holds:
        by_machine[hold.machine_id].append(hold)
    result = Attribution()
    for machine in machines:
        start = machine.start if since is None else max(machine.start, since)
        end = min(machine.end or until, until)
        if end <= start:
            continue
        per_second = machine.price_per_hour / 3600.0
        spans = []
        for hold in by_machine.get(machine.id, ()):
            a, b = max(hold.start, start), min(hold.end or end, end)
            if b > a:
                spans.append((a, b, hold))
        cuts = sorted({start, end, *(a for a, _, _ in spans), *(b for _, b, _ in spans)})
        idle = result.idle.setdefault(machine.environment, Share())
        result.billed.setdefault(machine.environment, Share()).add(
            (end - start).total_seconds() * per_second, (end - start).total_seconds())
        for left, right in zip(cuts, cuts[1:], strict=False):
            seconds = (right - left).total_seconds()
            on = [hold for a, b, hold in spans if a <= left and b >= right]
            total = sum(hold.weight for hold in on)
            if not total:
                idle.add(seconds * per_second, seconds)
                continue
            for hold in on:
                part = hold.weight / total
                result.executions.setdefault(hold.execution_id, Share()).add(
                    seconds * per_second * part, seconds * part)
    return result


PERIODS = ("month", "week", "day")
PERIOD_WORDS = {"month": "monthly", "week": "weekly", "day": "daily"}


def period_start(period: str, now: datetime) -> datetime:
    """The start of the budget period `now` is in, in `now`'s zone (UTC): the month's 1st, the week's
    Monday or the day, at midnight."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}")


def execution_cost(store: Any, e: Any, now: datetime | None = None) -> float:
    """What an execution's latest attempt cost: as stored when it ended, else worked out from its machine's
    rows (a running one's live estimate so far); 0 on a machine nobody bills. `store`: Store or the CLI's
    quick reader (both answer get_environment_by_id and machine_and_holders)."""
    stored = getattr(e, "cost_usd", None)
    if stored is not None:
        return round(float(stored), 4)
    hold = hold_of(e)
    if hold is None:
        return 0.0
    env = store.get_environment_by_id(e.environment_id)
    if not env.price_per_hour or not capabilities(env.cloud).billed:
        return 0.0
    machine, holders = store.machine_and_holders(e.machine_id)
    if machine is None:
        return 0.0
    holds = [h for h in map(hold_of, holders) if h is not None]
    share = attribute([billed_machine(machine, env.name, env.price_per_hour)], holds, hold.start,
                      hold.end or now or utcnow()).executions.get(e.id)
    return 0.0 if share is None else round(share.cost_usd, 4)
