"""An execution's statuses: how it is inserted (`created`), admitted under its user's quota
(`queued`) and moved on, each change with the status event it records. The parts that change
executions inside their own transactions (core, fleet, tasks) build on this one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, insert, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from vh_orch.orchestrator.models import Execution, ExecutionEvent, Lease, Project, Quota, User
from vh_orch.orchestrator.store.costs import BudgetState, CostsStore
from vh_orch.orchestrator.store.database import table_of
from vh_orch.orchestrator.store.webhooks import WebhooksStore
from vh_orch.timeutil import as_utc, iso
from vh_orch.values import FINAL_STATUSES, ExecutionStatus

S = ExecutionStatus
_EXECUTIONS = table_of(Execution)
_EVENTS = table_of(ExecutionEvent)
_LEASES = table_of(Lease)
_STAMPS = {S.QUEUED: "queued_at", S.STARTED: "started_at"}  # the time each status sets (a final one: ended_at)
_FINAL = sorted(FINAL_STATUSES)
_CHUNK = 500  # ids in one IN (...) list, well under any engine's bound on parameters
ACTIVE_EXECUTION = (S.QUEUED, S.STARTED, S.STOPPING)  # what counts against a quota
DEFAULT_QUOTA_USER = "*"
WARN_AT = 0.8  # a budget this much spent sends its one warning of the period  # the quota row that applies to users without one of their own

# Which status may follow which. A final status is never left.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.CREATED: frozenset({S.QUEUED, S.STOPPED, S.ERROR}),
    S.QUEUED: frozenset({S.STARTED, S.STOPPED, S.ERROR}),
    S.STARTED: frozenset({S.STOPPING, S.COMPLETE, S.ERROR, S.STOPPED, S.QUEUED}),
    S.STOPPING: frozenset({S.STOPPED, S.ERROR, S.COMPLETE}),
}


class LifecycleStore(WebhooksStore, CostsStore):
    def _insert_execution(self, s: Session, execution: Execution) -> None:
        """Insert a new execution (status `created`) with the next counter of its project."""
        self._insert_executions(s, [execution])

    def _insert_executions(self, s: Session, executions: Sequence[Execution]) -> None:
        """Insert new executions (status `created`), numbered in order with their projects' next
        counters: one counter update per project and the rows in a few batched statements (a task's
        thousand children are not three thousand round trips)."""
        now = self.clock()
        for project_id in dict.fromkeys(e.project_id for e in executions):
            mine = [e for e in executions if e.project_id == project_id]
            last = s.execute(
                update(Project)
                .where(col(Project.id) == project_id)
                .values(execution_counter=Project.execution_counter + len(mine))
                .returning(Project.execution_counter)
            ).scalar_one()
            for offset, execution in enumerate(mine):
                execution.counter = last - len(mine) + 1 + offset
        for execution in executions:
            execution.status = S.CREATED
            execution.created_at = now
            execution.last_seq = 1
        s.add_all(executions)
        s.flush()
        s.add_all([ExecutionEvent(execution_id=e.id, seq=1, time=now, kind="status", text=S.CREATED)  # type: ignore[arg-type]
                   for e in executions])

    def admit(self, s: Session, executions: Sequence[Execution] | None = None,
              held: dict[tuple[str, str | int], BudgetState] | None = None) -> int:
        """Queue `created` executions in submission order while their users are under quota and neither
        their user nor their project has spent its budget (`held`: those that have, else looked up).
        One that waits for a budget says so in its status reason."""
        limits = {q.user: q.max_concurrent for q in s.exec(select(Quota))}
        default = limits.get(DEFAULT_QUOTA_USER)
        waiting = list(executions) if executions is not None else list(
            s.exec(select(Execution).where(Execution.status == S.CREATED).order_by(col(Execution.id)))
        )
        if not waiting:
            return 0
        if held is None:
            held = self._budget_holds(s, self.clock())
        if held:
            waiting = [e for e in waiting if not self._held_by_budget(s, e, held)]
        users = {e.user for e in waiting}
        active = dict(
            s.exec(
                select(Execution.user, func.count())
                .where(col(Execution.user).in_(users), col(Execution.status).in_(ACTIVE_EXECUTION))
                .group_by(Execution.user)
            ).all()
        )
        admitted: list[Execution] = []
        for execution in waiting:
            limit = limits.get(execution.user or "", default)
            current = active.get(execution.user, 0)
            if limit is not None and current >= limit:
                continue
            active[execution.user] = current + 1
            admitted.append(execution)
        self._transitions(s, admitted, S.QUEUED)
        return len(admitted)

    @staticmethod
    def _held_by_budget(s: Session, execution: Execution, held: dict[tuple[str, str | int], BudgetState]) -> bool:
        state = held.get(("user", execution.user or "")) or held.get(("project", execution.project_id))
        if state is None:
            return False
        # Said once, with the spend when it was first held (not rewritten as the spend moves on).
        if not (execution.status_reason or "").startswith(f"{state.scope} {state.name} has spent"):
            execution.status_reason = f"{state.message()}; it waits until the budget is raised or a new period starts"
            s.add(execution)
        return True

    def _stop_over_hard_budgets(self, s: Session, held: dict[tuple[str, str | int], BudgetState]) -> int:
        """Running executions of users and projects past a hard budget: `stopping` (outputs kept)."""
        stopped = 0
        for (scope, key), state in held.items():
            if not state.budget.hard:
                continue
            owned = Execution.user == key if scope == "user" else Execution.project_id == key
            for execution in s.exec(select(Execution).where(Execution.status == S.STARTED, owned)):
                self._transition(s, execution, S.STOPPING, reason=f"{state.message()} (a hard budget stops running work)")
                stopped += 1
        return stopped

    def _warn_budgets(self, s: Session, states: list[BudgetState]) -> list[BudgetState]:
        """Budgets 80 % spent in their period, once a period each: a `budget.warning` for the webhooks of
        the project (a user's budget: of the projects that user owns) that ask for it. Those warned now."""
        warned = []
        for state in states:
            b = state.budget
            if state.spent_usd < WARN_AT * b.usd or b.usd <= 0:
                continue
            if b.warned_period is not None and as_utc(b.warned_period) >= state.period_start:
                continue
            b.warned_period = state.period_start
            s.add(b)
            warned.append(state)
            body = {"scope": state.scope, "name": state.name, "usd": b.usd, "period": b.period,
                    "spent_usd": round(state.spent_usd, 4), "percent": round(100 * state.spent_usd / b.usd, 1),
                    "period_start": iso(state.period_start), "hard": b.hard}
            if b.project_id is not None:
                projects = [b.project_id]
            else:
                owner = s.exec(select(User.id).where(User.name == b.user)).first()
                projects = [] if owner is None else list(s.exec(select(Project.id).where(Project.owner_id == owner)))
            for project_id in projects:
                self._queue_event(s, project_id, "budget.warning", "budget", lambda _project: body)
        return warned

    def _transition(
        self, s: Session, execution: Execution, status: str, reason: str | None = None, now: datetime | None = None,
        also: Mapping[str, Any] | None = None, only: Sequence[Any] = (),
    ) -> bool:
        """Inside a write: move an execution to `status` (its caller checked that it may) and record
        the status event; `also`: more of its columns to write with it (an exit code). False if it did
        not move (see _transitions)."""
        return bool(self._transitions(s, [execution], status, [reason], now, also, only))

    def _transitions(self, s: Session, executions: Sequence[Execution], status: str,
                     reasons: Sequence[str | None] | None = None, now: datetime | None = None,
                     also: Mapping[str, Any] | None = None, only: Sequence[Any] = ()) -> list[Execution]:
        """Inside a write: move executions to `status` (each checked by its caller), each with its
        reason (`reasons`, in order; None: none) and its status event, in a few statements for the lot
        (an admission's or a claim's whole batch), not a round trip each. `last_seq` goes up in SQL
        and comes back: a log chunk stored meanwhile (append_chunks, which takes no lock) never
        shares a seq with the event. A final status writes what the attempt cost with it.

        Each row moves only if its status is not final (a final status is never left) and it meets
        `only` (conditions on the execution table): a writer that holds no lock over the row (an
        end) never overwrites what another wrote since it read it. Returns those moved; they are
        given the values written, and only they get an event."""
        if not executions:
            return []
        now = now or self.clock()
        whys = list(reasons) if reasons is not None else [None] * len(executions)
        s.flush()  # the rows' own changes first (a claim's machine and attempt)
        values: dict[str, Any] = {"status": status, **(also or {})}
        stamp = _STAMPS.get(status) or ("ended_at" if status in FINAL_STATUSES else None)
        if stamp is not None:
            values[stamp] = now
        groups: dict[tuple[str | None, float | None], list[Execution]] = {}
        for execution, why in zip(executions, whys, strict=True):
            cost = self._ended_cost(s, execution, now) if status in FINAL_STATUSES else None
            groups.setdefault((why, cost), []).append(execution)
        conn = s.connection()
        seqs: dict[int, int] = {}
        for (why, cost), group in groups.items():
            written = dict(values)
            if why is not None or status in (S.QUEUED, S.STARTED, S.COMPLETE):  # `complete` needs no reason
                written["status_reason"] = why
            if cost is not None:
                written["cost_usd"] = cost
            for ids in _chunks([e.id for e in group]):
                seqs.update(conn.execute(
                    update(_EXECUTIONS).where(_EXECUTIONS.c.id.in_(ids), _EXECUTIONS.c.status.not_in(_FINAL), *only)
                    .values(last_seq=_EXECUTIONS.c.last_seq + 1, **written)
                    .returning(_EXECUTIONS.c.id, _EXECUTIONS.c.last_seq)).all())
            for execution in group:
                if execution.id in seqs:
                    for key, value in written.items():
                        set_committed_value(execution, key, value)
                    set_committed_value(execution, "last_seq", seqs[execution.id])  # type: ignore[index]
        moved = [(e, why) for e, why in zip(executions, whys, strict=True) if e.id in seqs]
        if not moved:
            return []
        if status not in (S.STARTED, S.STOPPING):  # no replica runs them any more: their leases go to nobody
            for keys in _chunks([f"exec:{e.id}" for e, _ in moved]):
                conn.execute(update(_LEASES).where(_LEASES.c.key.in_(keys)).values(owner=0, expires_at=now))
        conn.execute(insert(_EVENTS), [
            {"execution_id": e.id, "seq": seqs[e.id], "time": now, "kind": "status",  # type: ignore[index]
             "stream": None, "text": status if why is None else f"{status}: {why}"}
            for e, why in moved])
        if status in FINAL_STATUSES:
            for execution, _ in moved:
                self._execution_ended(s, execution)  # its webhooks' deliveries, in this transaction
        return [e for e, _ in moved]


_T = TypeVar("_T")


def _chunks(items: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]
