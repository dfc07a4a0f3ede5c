"""The rows costs are computed from (orchestrator/costs.py): the billed machines of a window, the
executions that held them, and what each execution is counted under (user, project, environment,
task, pipeline)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.orchestrator.costs import (
    HOLDING, PERIOD_WORDS, BilledMachine, Hold, attribute, billed_machine, hold_of, period_start,
)
from vh_orch.orchestrator.models import Budget, Environment, Execution, Machine, PipelineNode, Project, Task
from vh_orch.orchestrator.store.database import Database, table_of
from vh_orch.timeutil import as_utc
from vh_orch.values import BILLED_MACHINE


@dataclass(frozen=True, slots=True)
class CostOwner:
    """What an execution's cost is counted under."""

    user: str | None
    project_id: int
    project: str
    environment: str
    task_id: int | None
    pipeline_id: int | None


@dataclass(frozen=True, slots=True)
class CostRows:
    machines: list[BilledMachine]
    holds: list[Hold]
    owners: dict[int, CostOwner]  # by execution id: every execution that held a billed machine


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A budget with what its user or project spent in its current period."""

    budget: Budget
    project: str | None  # the project's name, for a project's budget
    period_start: datetime
    spent_usd: float

    @property
    def scope(self) -> str:
        return "user" if self.budget.user is not None else "project"

    @property
    def name(self) -> str:
        return self.budget.user if self.budget.user is not None else (self.project or "?")

    @property
    def reached(self) -> bool:
        return self.spent_usd >= self.budget.usd

    def message(self) -> str:
        """Why its work waits (or was stopped): who spent how much of which budget."""
        b = self.budget
        whose = "their" if b.user is not None else "its"
        return (f"{self.scope} {self.name} has spent ${self.spent_usd:,.2f} of {whose} ${b.usd:,.2f} "
                f"{PERIOD_WORDS.get(b.period, b.period)} budget")


class CostsStore(Database):

    # -- budgets ----------------------------------------------------------------------------

    def put_budget(self, user: str | None, project_id: int | None, usd: float, period: str, hard: bool) -> bool:
        """Set a user's or a project's budget; True when new."""
        with self.write() as s:
            row = s.exec(select(Budget).where(_scope(user, project_id))).first()
            created = row is None
            if row is None:
                row = Budget(user=user, project_id=project_id, usd=usd, period=period, hard=hard)
            else:
                row.usd, row.period, row.hard, row.updated_at = usd, period, hard, self.clock()
            s.add(row)
            return created

    def remove_budget(self, user: str | None, project_id: int | None) -> bool:
        with self.write() as s:
            row = s.exec(select(Budget).where(_scope(user, project_id))).first()
            if row is None:
                return False
            s.delete(row)
            return True

    def execution_history(self, since: datetime) -> list[tuple[datetime, datetime, datetime, str]]:
        """(created_at, started_at, ended_at, environment name) of every execution created since `since`
        that ran and ended (`vh-orch simulate --from-history`), oldest first."""
        with self.read() as s:
            return [(created, started, ended, name) for created, started, ended, name in s.exec(
                select(Execution.created_at, Execution.started_at, Execution.ended_at, Environment.name)
                .join(Environment, col(Environment.id) == Execution.environment_id)
                .where(Execution.created_at >= since, col(Execution.started_at).is_not(None),
                       col(Execution.ended_at).is_not(None))
                .order_by(col(Execution.id)))]

    def all_environments(self) -> list[Environment]:
        """Every environment, removed ones too (history still names them)."""
        with self.read() as s:
            return list(s.exec(select(Environment).order_by(col(Environment.name))))

    def has_executions_of(self, user: str) -> bool:
        """Whether any execution was submitted under this user name (a budget may name such a user)."""
        with self.read() as s:
            return s.exec(select(Execution.id).where(Execution.user == user).limit(1)).first() is not None

    def budget_states(self, now: datetime | None = None) -> list[BudgetState]:
        """Every budget with its spend in its current period (ended executions and the live share of
        running ones), users' first, by name."""
        with self.read() as s:
            return self._budget_states(s, now or self.clock())

    def _budget_states(self, s: Session, now: datetime) -> list[BudgetState]:
        budgets = list(s.exec(select(Budget)))
        if not budgets:
            return []
        names = dict(s.exec(select(Project.id, Project.name)).all())
        states = []
        for period in sorted({b.period for b in budgets}):
            start = period_start(period, now)
            rows = self._cost_rows(s, start, now)
            shares = attribute(rows.machines, rows.holds, start, now)
            by_user: dict[str | None, float] = defaultdict(float)
            by_project: dict[int, float] = defaultdict(float)
            for execution_id, share in shares.executions.items():
                owner = rows.owners[execution_id]
                by_user[owner.user] += share.cost_usd
                by_project[owner.project_id] += share.cost_usd
            for b in budgets:
                if b.period == period:
                    spent = by_user[b.user] if b.user is not None else by_project[b.project_id or 0]
                    states.append(BudgetState(b, names.get(b.project_id or 0), start, spent))
        states.sort(key=lambda st: (st.scope != "user", st.name))
        return states

    def _budget_holds(self, s: Session, now: datetime,
                      states: list[BudgetState] | None = None) -> dict[tuple[str, str | int], BudgetState]:
        """The users and projects whose spend reached their budget: ("user", name) or ("project", id)."""
        held: dict[tuple[str, str | int], BudgetState] = {}
        for state in self._budget_states(s, now) if states is None else states:
            if state.reached:
                b = state.budget
                held[("user", b.user) if b.user is not None else ("project", b.project_id or 0)] = state
        return held

    # -- what costs are worked out from --------------------------------------------------------

    def cost_rows(self, since: datetime | None, until: datetime) -> CostRows:
        """Billed machines alive at some time in [since, until] (each from its creation to its termination,
        in a state that costs money or already terminated), and the latest attempts that held them."""
        with self.read() as s:
            return self._cost_rows(s, since, until)

    def machine_and_holders(self, machine_id: int) -> tuple[Machine | None, list[Execution]]:
        """A machine and every execution that ran on it (`exec info`'s live estimate of a cost)."""
        with self.read() as s:
            return s.get(Machine, machine_id), list(s.exec(select(Execution).where(Execution.machine_id == machine_id)))

    def _cost_rows(self, s: Session, since: datetime | None, until: datetime,
                   machine_id: int | None = None) -> CostRows:
        table = table_of(Environment)
        envs = {e.id: e for e in s.connection().execute(
            select(table.c.id, table.c.name, table.c.price_per_hour, table.c.cloud))}
        billed = {i for i, e in envs.items() if e.price_per_hour > 0 and capabilities(e.cloud).billed}
        if not billed:
            return CostRows([], [], {})
        query = select(Machine).where(col(Machine.environment_id).in_(billed), Machine.created_at < until,
                                      or_(col(Machine.state).in_(BILLED_MACHINE),
                                          col(Machine.terminated_at).is_not(None)))
        if machine_id is not None:
            query = query.where(Machine.id == machine_id)
        if since is not None:
            query = query.where(or_(col(Machine.terminated_at).is_(None), Machine.terminated_at > since))
        machines = [billed_machine(m, envs[m.environment_id].name, envs[m.environment_id].price_per_hour)
                    for m in s.exec(query)]
        if not machines:
            return CostRows([], [], {})
        rows = s.exec(
            select(Execution, Project.name, Task.pipeline_node_id, PipelineNode.pipeline_id)
            .join(Project, col(Project.id) == Execution.project_id)
            .join(Task, col(Task.id) == Execution.task_id, isouter=True)
            .join(PipelineNode, col(PipelineNode.id) == Execution.pipeline_node_id, isouter=True)
            .where(col(Execution.machine_id).in_([m.id for m in machines]),
                   col(Execution.started_at).is_not(None), Execution.started_at < until,
                   or_(col(Execution.status).in_(HOLDING), col(Execution.ended_at).is_not(None)))
        ).all()
        task_pipelines = self._task_pipelines(s, {node for _, _, node, _ in rows if node is not None})
        holds, owners = [], {}
        for e, project, task_node, pipeline_id in rows:
            hold = hold_of(e)
            if hold is None or (since is not None and hold.end is not None and hold.end <= since):
                continue
            assert e.id is not None
            holds.append(hold)
            owners[e.id] = CostOwner(e.user, e.project_id, project, envs[e.environment_id].name,
                                     e.task_id, pipeline_id if pipeline_id is not None else task_pipelines.get(task_node))
        return CostRows(machines, holds, owners)

    def _ended_cost(self, s: Session, execution: Execution, ended_at: datetime) -> float:
        """Inside the write that ends it (at `ended_at`): what an execution's latest attempt cost (0: no
        billed machine)."""
        if execution.machine_id is None or execution.started_at is None:
            return 0.0
        start, end = as_utc(execution.started_at), as_utc(ended_at)
        rows = self._cost_rows(s, start, end, execution.machine_id)
        share = attribute(rows.machines, rows.holds, start, end).executions.get(execution.id or 0)
        return 0.0 if share is None else share.cost_usd

    @staticmethod
    def _task_pipelines(s: Session, nodes: set[int]) -> dict[int | None, int]:
        """The pipeline of each of these nodes (a task node's children count for its pipeline)."""
        if not nodes:
            return {}
        return {node: pipeline for node, pipeline in s.exec(
            select(PipelineNode.id, PipelineNode.pipeline_id).where(col(PipelineNode.id).in_(nodes)))}


def _scope(user: str | None, project_id: int | None) -> Any:
    return Budget.user == user if user is not None else Budget.project_id == project_id
