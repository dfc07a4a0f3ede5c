"""Cost reports: what the billed machines of a window cost, split by user, project, environment, task or
pipeline (orchestrator/costs.py says how), with each environment's idle time as a row of its own. The
rows of a report for an administrator add up to the machines' bill over the same window."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from vh_orch.errors import UserInputError
from vh_orch.orchestrator.costs import attribute
from vh_orch.timeutil import as_utc, iso, utcnow

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import User
    from vh_orch.orchestrator.store.store import Store

BY = ("user", "project", "environment", "task", "pipeline")
MAX_DAYS = 3660
DEFAULT_DAYS = 30.0  # a report's window when it names none


@dataclass(frozen=True, slots=True)
class CostRow:
    key: str | int | None  # the user's, project's or environment's name, the task's or pipeline's id; None: none
    cost_usd: float
    machine_hours: float
    executions: int
    idle: bool = False  # an environment's machine time no execution held (key: the environment)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "cost_usd": round(self.cost_usd, 4), "machine_hours": round(self.machine_hours, 4),
                "executions": self.executions, "idle": self.idle}


@dataclass(frozen=True, slots=True)
class CostReport:
    by: str
    since: datetime | None
    until: datetime
    rows: list[CostRow]

    @property
    def total_usd(self) -> float:
        return sum(row.cost_usd for row in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "since": iso(self.since), "until": iso(self.until),
                "total_usd": round(self.total_usd, 4), "rows": [row.as_dict() for row in self.rows]}


def window_start(since: str | None, days: float | None, now: datetime) -> datetime:
    """The report's start: a date or time (`--since 2026-12-01`, UTC unless it says), or `days` back
    from now; neither: DEFAULT_DAYS back."""
    if since is not None and days is not None:
        raise UserInputError("give --since or --days, not both", field="since")
    if days is not None:
        if not 0 < days <= MAX_DAYS:
            raise UserInputError(f"--days must be more than 0 and at most {MAX_DAYS}, not {days:g}", field="days")
        return now - timedelta(days=days)
    if since is None:
        return now - timedelta(days=DEFAULT_DAYS)
    try:
        start = as_utc(datetime.fromisoformat(since.strip())).astimezone(UTC)
    except ValueError:
        raise UserInputError(f"--since {since!r} is not a date or time: give e.g. 2026-12-01 or "
                             f"2026-12-01T08:00:00Z", field="since") from None
    if start >= now:
        raise UserInputError(f"--since {since} is not in the past", field="since")
    return start


def cost_report(store: Store, by: str, since: datetime | None, until: datetime | None = None,
                user: User | None = None) -> CostReport:
    """The report split `by` one of BY. `user`: what that user may see (their projects' executions, no
    idle rows) unless an administrator; None: everything (the operator's CLI)."""
    if by not in BY:
        raise UserInputError(f"cannot split costs by {by!r}: give one of {', '.join(BY)}", field="by")
    until = until or utcnow()
    rows = store.cost_rows(since, until)
    shares = attribute(rows.machines, rows.holds, since, until)
    visible = None if user is None or user.is_admin else {p.id for p in store.visible_projects(user)}
    cost: dict[Any, float] = defaultdict(float)
    hours: dict[Any, float] = defaultdict(float)
    count: dict[Any, int] = defaultdict(int)
    for execution_id, share in shares.executions.items():
        owner = rows.owners[execution_id]
        if visible is not None and owner.project_id not in visible:
            continue
        key = {"user": owner.user, "project": owner.project, "environment": owner.environment,
               "task": owner.task_id, "pipeline": owner.pipeline_id}[by]
        cost[key] += share.cost_usd
        hours[key] += share.machine_seconds / 3600
        count[key] += 1
    found = [CostRow(key, cost[key], hours[key], count[key]) for key in cost]
    found.sort(key=lambda row: (-row.cost_usd, str(row.key)))
    if visible is None:
        found += [CostRow(env, share.cost_usd, share.machine_seconds / 3600, 0, idle=True)
                  for env, share in sorted(shares.idle.items()) if share.machine_seconds > 0]
    return CostReport(by, since, until, found)

