"""Moving tasks on: one pass of the daemon decides each active task's next children.

A task's state is its row and its children's rows, nothing else: `advance()` reads them,
decides, and writes, so a daemon killed at any moment resumes every task where the database
says it is. The next children are decided and inserted in one transaction under the task's row
(store.add_task_children), so none is created twice.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from vh_orch.config.steps import build_command, get_step, parse_config
from vh_orch.errors import LeaseLost, UserInputError
from vh_orch.orchestrator.models import Execution, Task
from vh_orch.orchestrator.store.tasks import ChildState
from vh_orch.orchestrator.tasks.definition import child_parameters
from vh_orch.orchestrator.tasks.search import MEDIAN_REASON, ask, plan, series, should_stop
from vh_orch.orchestrator.tasks.spec import TaskSpec
from vh_orch.orchestrator.tasks.summary import best_child, count_statuses, spec_of, total_children
from vh_orch.values import FINAL_STATUSES, ExecutionStatus, TaskStatus

if TYPE_CHECKING:
    from valohai_yaml.objs import Step

    from vh_orch.orchestrator.store import Store

log = logging.getLogger(__name__)
S = ExecutionStatus
T = TaskStatus


class TaskEngine:
    """Moves every active task on: one call per daemon pass (and one after a task is created)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._plans: dict[int, list[dict[str, Any]]] = {}
        self._series: dict[int, dict[int, float]] = {}  # finished children's median-stopping series
        # Tasks with every child made: a child's end changes nothing for them but, once the last one
        # ends, their status (the daemon's passes may then look at them a little later).
        self.all_made: set[int] = set()
        self._lock = threading.Lock()

    def run_pass(self, store: Store | None = None) -> None:
        """Move every active task on; `store`: the one to write through from now on (a replica's,
        fenced by its `cluster` lease)."""
        if store is not None:
            self.store = store
        for task in self.store.active_tasks():
            try:
                self.advance(task.id)  # type: ignore[arg-type]
            except LeaseLost:
                raise
            except Exception as exc:
                log.exception("task %s could not be moved on", task.id)
                if isinstance(exc, UserInputError):
                    self.store.set_task_status(task.id, T.ERROR, f"its next execution cannot be made: {exc}")  # type: ignore[arg-type]

    def advance(self, task_id: int) -> None:
        with self._lock:
            self._advance(task_id)

    def _advance(self, task_id: int) -> None:
        task = self.store.get_task(task_id)
        if T(task.status).is_final:
            self.all_made.discard(task_id)
            return
        # Each child's status, from a count per status (a pass looks at every active task: a task of
        # thousands of children is not read whole each time); the children themselves only where a
        # rule needs them (a failed child that stops the task, median stopping).
        counts = self.store.task_child_counts([task_id]).get(task_id, {})
        statuses = [status for status, n in counts.items() for _ in range(n)]
        if task.status == T.STOPPING:
            if all(status in FINAL_STATUSES for status in statuses):
                final = task.spec.get("_final", T.STOPPED)
                self.store.set_task_status(task_id, final)
            else:
                self.store.stop_task(task_id, task.status_reason or "the task is stopping")
            return
        spec = spec_of(task)
        if counts.get(S.ERROR) and spec.on_child_error == "stop-all-and-error":
            failed = [c for c in self.store.task_child_states(task_id) if c.status == S.ERROR]
            if failed:
                first = failed[0]
                self.store.stop_task(task_id, f"execution #{first.counter} failed ({first.status_reason}); "
                                              "on-child-error is stop-all-and-error", final=T.ERROR)
                return
        if spec.median_stopping is not None:
            self._median_stop(task, spec, self.store.task_child_states(task_id))
        planned = self._plan(task, spec)
        if len(statuses) >= total_children(spec, planned):
            self.all_made.add(task_id)
        else:
            self.all_made.discard(task_id)
        if _room(spec, planned, statuses) > 0:  # only then a write (under the task's row)
            if self.store.add_task_children(task_id, self._decider()):
                return
        if len(statuses) >= total_children(spec, planned) and all(status in FINAL_STATUSES for status in statuses):
            self._finish(task, spec, self.store.task_children(task_id))

    def _plan(self, task: Task, spec: TaskSpec) -> list[dict[str, Any]] | None:
        if spec.type == "bayesian_tpe":
            return None
        planned = self._plans.get(task.id)  # type: ignore[arg-type]
        if planned is None:
            planned = self._plans[task.id] = plan(spec)  # type: ignore[index]
        return planned

    def _finish(self, task: Task, spec: TaskSpec, children: list[Execution]) -> None:
        failed = [c for c in children if c.status == S.ERROR]
        counts = ", ".join(f"{n} {status}" for status, n in sorted(count_statuses(children).items()))
        best = best_child(spec, children)
        detail = f"{len(children)} executions: {counts}" if children else "no executions"
        if best is not None:
            detail += f"; best #{best['counter']} with {spec.target_metric} = {best['value']}"
        if failed and spec.on_child_error == "continue-and-error":
            self.store.set_task_status(task.id, T.ERROR, f"{len(failed)} of {detail} (on-child-error is "  # type: ignore[arg-type]
                                                         "continue-and-error)")
        else:
            self.store.set_task_status(task.id, T.COMPLETE, detail)  # type: ignore[arg-type]
        self._plans.pop(task.id, None)  # type: ignore[arg-type]
        self.all_made.discard(task.id)  # type: ignore[arg-type]

    def _decider(self) -> Any:
        def decide(task: Task, states: list[ChildState]) -> list[Execution]:
            spec = spec_of(task)
            planned = self._plan(task, spec)
            room = _room(spec, planned, [c.status for c in states])
            if spec.on_child_error == "stop-all-and-error" and any(c.status == S.ERROR for c in states):
                return []  # a child failed since the pass looked: the next pass stops the task
            if room <= 0:
                return []
            step = get_step(parse_config(self.store.get_commit(task.commit_id).config_yaml), task.step)
            children = self.store.task_children(task.id) if planned is None else []  # type: ignore[arg-type]
            new: list[Execution] = []
            pending: list[dict[str, Any]] = []
            for index in range(len(states), len(states) + room):
                if planned is not None:
                    varied = planned[index]
                else:
                    varied = ask(spec, children, index, step, pending)
                    pending.append(varied)
                new.append(self._child(task, step, index, varied))
            return new

        return decide

    def _child(self, task: Task, step: Step, index: int, varied: dict[str, Any]) -> Execution:
        parameters = child_parameters(step, varied)
        t = task.template
        base = t.get("title") or task.title or (f"{task.name}" if task.name else f"task {task.counter}")
        return Execution(
            project_id=task.project_id, counter=0, commit_id=task.commit_id, step=task.step,
            title=f"{base} #{index + 1}", image=t.get("image"), pull_policy=t.get("pull_policy"),
            command=build_command(step, parameters), parameters=parameters, inputs=t.get("inputs") or {},
            environment_variables=t.get("environment_variables") or {}, time_limit_s=t.get("time_limit_s"),
            environment_id=task.environment_id, priority=t.get("priority") or 0, user=task.user,
            task_id=task.id, task_index=index, restricted=bool(t.get("restricted")), gpus=t.get("gpus") or 0,
        )

    def _median_stop(self, task: Task, spec: TaskSpec, children: list[ChildState]) -> None:
        rule = spec.median_stopping
        assert rule is not None
        finished = []
        for child in children:
            if child.status == S.COMPLETE:
                if child.id not in self._series:
                    points = [p.data for p in self.store.metadata_points(child.id)]  # type: ignore[arg-type]
                    self._series[child.id] = series(points, rule.metric)  # type: ignore[index]
                finished.append(self._series[child.id])  # type: ignore[index]
        if len(finished) < rule.min_finished:
            return
        for child in children:
            if child.status != S.STARTED:
                continue
            running = series([p.data for p in self.store.metadata_points(child.id)], rule.metric)  # type: ignore[arg-type]
            if should_stop(rule, spec, running, finished):
                last = max(running)
                reason = (f"{MEDIAN_REASON}: {rule.metric} = {running[last]:g} at step {last} trails the median of "
                          f"{len(finished)} finished executions")
                if self.store.record_pruned(child.id, reason):  # type: ignore[arg-type]
                    log.info("task %s: execution %s stopped early (%s)", task.id, child.id, reason)


def _room(spec: TaskSpec, planned: list[dict[str, Any]] | None, statuses: list[str]) -> int:
    """How many children may be added now (`statuses`: the children's, one each): what is left, within
    the batch size and max queued."""
    room = total_children(spec, planned) - len(statuses)
    active = [status for status in statuses if status not in FINAL_STATUSES]
    if spec.batch_size is not None:
        room = min(room, spec.batch_size - len(active))
    if spec.max_queued is not None:
        waiting = sum(1 for status in active if status in (S.CREATED, S.QUEUED))
        room = min(room, spec.max_queued - waiting)
    return room
