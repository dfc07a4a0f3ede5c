"""What a task's row and children tell: its spec, how many children it has in all, the best one,
and what `task info` and the API show beyond the row."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from vh_orch.orchestrator.costs import execution_cost
from vh_orch.orchestrator.tasks.search import MEDIAN_REASON, grid_size, plan
from vh_orch.orchestrator.tasks.spec import TaskSpec
from vh_orch.values import ExecutionStatus

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Execution, Task
    from vh_orch.orchestrator.store import Store

S = ExecutionStatus


def spec_of(task: Task) -> TaskSpec:
    return TaskSpec.from_json({k: v for k, v in task.spec.items() if not k.startswith("_")})


def total_children(spec: TaskSpec, planned: list[dict[str, Any]] | None) -> int:
    if planned is not None:
        return len(planned)
    return spec.execution_count or 0


def planned_count(spec: TaskSpec) -> int:
    """How many children the task has in all, without making them (a grid's size is a product)."""
    if spec.type in ("random_search", "bayesian_tpe"):
        return spec.execution_count or 0
    if spec.type == "manual_search":
        return len(plan(spec))
    size = grid_size(spec)
    return size if spec.execution_count is None else min(size, spec.execution_count)


def task_title(task: Task) -> str:
    """What a task is called where it is shown: its title, its valohai.yaml name, or its type and step."""
    return task.title or task.name or f"{task.type} of {task.step}"


def best_child(spec: TaskSpec, children: list[Execution]) -> dict[str, Any] | None:
    """The finished child with the best target value: {execution, counter, value, objective}."""
    best: tuple[float, Execution] | None = None
    for child in children:
        if child.status not in (S.COMPLETE, S.STOPPED):
            continue
        objective = spec.objective(child.metadata_latest or {})
        if objective is not None and (best is None or objective > best[0]):
            best = (objective, child)
    if best is None:
        return None
    child = best[1]
    return {"execution": child.id, "counter": child.counter,
            "value": child.metadata_latest.get(spec.target_metric or ""), "objective": best[0]}


def count_statuses(children: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for child in children:
        counts[child.status] = counts.get(child.status, 0) + 1
    return counts


def task_summary(store: Store, task: Task, children: list[Execution] | None = None) -> dict[str, Any]:
    """What `task info` and the API show beyond the row: children, counts, best, savings."""
    children = store.task_children(task.id) if children is None else children  # type: ignore[arg-type]
    spec = spec_of(task)
    return {
        "executions": [c.id for c in children],
        "counters": [c.counter for c in children],
        "counts": count_statuses(children),
        "planned": planned_count(spec),
        "best": best_child(spec, children),
        "median_stopping": None if spec.median_stopping is None else _median_savings(children, store.clock()),
        "cost_usd": round(sum(execution_cost(store, c) for c in children), 4),  # its children's, so far
    }


def _median_savings(children: list[Execution], now: Any) -> dict[str, Any]:
    """Counted from the children as they ended, not when the rule fired: a child the rule stops
    in its last step may complete before its stop lands, and it saved nothing. Each stopped
    child saved about the finished children's median run time less the time it ran."""
    def ran(child: Execution) -> float:
        return ((child.ended_at or now) - child.started_at).total_seconds() if child.started_at else 0.0

    typical = statistics.median([ran(c) for c in children if c.status == S.COMPLETE] or [0.0])
    stopped = [c for c in children if c.status in (S.STOPPED, S.STOPPING)
               and (c.status_reason or "").startswith(MEDIAN_REASON)]
    saved = sum(max(0.0, typical - ran(c)) for c in stopped)
    return {"stopped": len(stopped), "machine_hours_saved": round(saved / 3600, 4)}
