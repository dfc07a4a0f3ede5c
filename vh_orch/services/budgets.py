"""Budgets: a spending limit per month, week or day for a user or a project. Once their spend in the
period (ended executions plus the live share of running ones, orchestrator/costs.py) reaches it, their
new executions (task and pipeline children too) wait as `created` with the reason; a hard budget also
stops their running executions (outputs kept). Raising the budget, removing it or a new period lets
the waiting ones go."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.costs import PERIODS
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.store.store import Store

MAX_USD = 1e9


@dataclass(frozen=True, slots=True)
class BudgetView:
    scope: str  # user or project
    name: str
    usd: float
    period: str
    hard: bool
    spent_usd: float
    period_start: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "name": self.name, "usd": self.usd, "period": self.period, "hard": self.hard,
                "spent_usd": round(self.spent_usd, 4), "period_start": iso(self.period_start)}


def _subject(store: Store, user: str | None, project: str | None) -> tuple[str | None, int | None]:
    """(user name, project id) of a budget's subject: exactly one of them, and one that exists."""
    if (user is None) == (project is None):
        raise UserInputError("give --user NAME or --project NAME (one of them)", field="user")
    if project is not None:
        return None, store.get_project(project).id
    assert user is not None
    name = user.strip()
    if not name or len(name) > 200:
        raise UserInputError("--user: give a user's name", field="user")
    if store.find_user(name) is None and not store.has_executions_of(name):
        raise UserInputError(f"no user named {name!r} (see `vh-orch user list`; a name executions were submitted "
                             f"under counts too)", field="user")
    return name, None


def set_budget(store: Store, user: str | None, project: str | None, usd: float, period: str = "month",
               hard: bool = False) -> bool:
    """Set (or change) a budget; True when new. The next pass holds or releases work by it."""
    if not math.isfinite(usd) or not 0 <= usd <= MAX_USD:
        raise UserInputError(f"--usd must be a number from 0 to {MAX_USD:,.0f}, not {usd:g}", field="usd")
    if period not in PERIODS:
        raise UserInputError(f"--period must be one of {', '.join(PERIODS)}, not {period!r}", field="period")
    user_name, project_id = _subject(store, user, project)
    return store.put_budget(user_name, project_id, float(usd), period, hard)


def list_budgets(store: Store) -> list[BudgetView]:
    return [BudgetView(st.scope, st.name, st.budget.usd, st.budget.period, st.budget.hard, st.spent_usd,
                       st.period_start) for st in store.budget_states()]


def remove_budget(store: Store, user: str | None, project: str | None) -> None:
    if (user is None) == (project is None):
        raise UserInputError("give --user NAME or --project NAME (one of them)", field="user")
    project_id = None if project is None else store.get_project(project).id
    if not store.remove_budget(user, project_id):
        raise NotFound(f"{'user ' + user if user is not None else 'project ' + str(project)} has no budget; "
                       f"see `vh-orch budget list`")
