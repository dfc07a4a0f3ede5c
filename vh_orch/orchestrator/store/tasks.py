"""Tasks and their children: creating them, deciding the next children under the task's lock,
and ending them. Children are executions (`task_id`, unique `task_index`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from vh_orch.errors import NotFound
from vh_orch.orchestrator.models import Execution, Project, Task
from vh_orch.orchestrator.store.lifecycle import LifecycleStore
from vh_orch.values import FINAL_STATUSES, ExecutionStatus, TaskStatus

S = ExecutionStatus
T = TaskStatus
ACTIVE_TASK = (T.CREATED, T.STARTED, T.STOPPING)



@dataclass(frozen=True, slots=True)
class ChildState:
    """What moving a task on needs of each child (a few columns, not its parameters or metadata)."""

    id: int
    task_index: int
    counter: int
    status: str
    status_reason: str | None
    started_at: datetime | None
    ended_at: datetime | None


# Given the task and its children so far (by task_index), the children to add now.
Decide = Callable[[Task, list[ChildState]], list[Execution]]
_STATE_COLUMNS = (Execution.id, Execution.task_index, Execution.counter, Execution.status, Execution.status_reason,
                  Execution.started_at, Execution.ended_at)


class TasksStore(LifecycleStore):
    def create_task(self, task: Task) -> Task:
        """Insert a new task (status `created`) with the next task counter of its project."""
        with self.write() as s:
            task.counter = s.execute(
                update(Project)
                .where(col(Project.id) == task.project_id)
                .values(task_counter=Project.task_counter + 1)
                .returning(Project.task_counter)
            ).scalar_one()
            task.status = T.CREATED
            task.created_at = self.clock()
            s.add(task)
            s.flush()
            return task

    def get_task(self, task_id: int) -> Task:
        with self.read() as s:
            task = s.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id}; see `vh-orch task list`")
        return task

    def task_by_counter(self, project_id: int, counter: int | None) -> Task | None:
        """A project's task by its counter; None: its latest."""
        with self.read() as s:
            query = select(Task).where(Task.project_id == project_id)
            if counter is None:
                return s.exec(query.order_by(col(Task.counter).desc()).limit(1)).first()
            return s.exec(query.where(Task.counter == counter)).first()

    def list_tasks(self, project_ids: Sequence[int] | None = None, statuses: Sequence[str] | None = None,
                   counters: Sequence[int] | None = None, limit: int | None = None,
                   offset: int = 0) -> tuple[list[Task], int]:
        """Tasks, newest first, and how many match in all."""
        with self.read() as s:
            where = []
            if project_ids is not None:
                where.append(col(Task.project_id).in_(list(project_ids)))
            if statuses:
                where.append(col(Task.status).in_(list(statuses)))
            if counters:
                where.append(col(Task.counter).in_(list(counters)))
            total = s.exec(select(func.count()).select_from(Task).where(*where)).one()
            query = select(Task).where(*where).order_by(col(Task.id).desc()).offset(offset)
            if limit is not None:
                query = query.limit(limit)
            return list(s.exec(query)), total

    def active_tasks(self) -> list[Task]:
        with self.read() as s:
            return list(s.exec(select(Task).where(col(Task.status).in_(ACTIVE_TASK)).order_by(col(Task.id))))

    def task_children(self, task_id: int) -> list[Execution]:
        with self.read() as s:
            return list(s.exec(select(Execution).where(Execution.task_id == task_id)
                               .order_by(col(Execution.task_index))))

    def task_stop_condition(self, task_id: int) -> Any:
        """A task's stop condition (spec's `stop_condition`, None without one): it never changes, and each
        of its children's runners asks, so it is kept after the first read."""
        def read() -> Any:
            with self.read() as s:
                return s.get_one(Task, task_id).spec.get("stop_condition")
        return self.kept("task stop condition", task_id, read)

    def task_child_states(self, task_id: int) -> list[ChildState]:
        with self.read() as s:
            return self._child_states(s, task_id)

    @staticmethod
    def _child_states(s: Session, task_id: int) -> list[ChildState]:
        rows = s.exec(select(*_STATE_COLUMNS).where(Execution.task_id == task_id)  # type: ignore[call-overload]
                      .order_by(col(Execution.task_index)))
        return [ChildState(*row) for row in rows]

    def task_child_counts(self, task_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Per task: how many children are in each status."""
        out: dict[int, dict[str, int]] = {}
        if not task_ids:
            return out
        with self.read() as s:
            rows = s.exec(select(Execution.task_id, Execution.status, func.count())
                          .where(col(Execution.task_id).in_(list(task_ids)))
                          .group_by(Execution.task_id, Execution.status)).all()
        for task_id, status, n in rows:
            out.setdefault(task_id, {})[status] = n  # type: ignore[index]
        return out

    def add_task_children(self, task_id: int, decide: Decide) -> list[Execution]:
        """Decide and insert a task's next children in one transaction, holding the task's row
        (a second caller waits and then sees them): no child is ever created twice."""
        with self.write() as s:
            task = s.exec(select(Task).where(Task.id == task_id).with_for_update()).one()
            if task.status not in (T.CREATED, T.STARTED):
                return []
            new = decide(task, self._child_states(s, task_id))
            self._insert_executions(s, new)
            if new:
                self.admit(s, new)
            if new and task.status == T.CREATED:
                self._task_transition(s, task, T.STARTED)
            return new

    def set_task_status(self, task_id: int, status: str, reason: str | None = None,
                        changes: dict[str, Any] | None = None) -> Task:
        """End a task (or mark it stopping); a final task never changes again."""
        with self.write() as s:
            task = s.exec(select(Task).where(Task.id == task_id).with_for_update()).one()
            if not T(task.status).is_final:
                for key, value in (changes or {}).items():
                    setattr(task, key, value)
                self._task_transition(s, task, status, reason)
            return task

    def stop_task(self, task_id: int, reason: str, final: str = T.STOPPED) -> Task:
        """Stop a task: it is `stopping` until every child has ended, then `final`; its children
        are stopped now (queued ones at once, running ones gracefully, outputs kept)."""
        with self.write() as s:
            task = s.exec(select(Task).where(Task.id == task_id).with_for_update()).one()
            if T(task.status).is_final:
                return task
            if task.status != T.STOPPING:
                task.spec = {**task.spec, "_final": final}
                self._task_transition(s, task, T.STOPPING, reason)
            children = s.exec(select(Execution).where(Execution.task_id == task_id,
                                                      col(Execution.status).not_in(list(FINAL_STATUSES))))
            for child in children:
                if child.status in (S.CREATED, S.QUEUED):
                    self._transition(s, child, S.STOPPED, reason=reason)
                elif child.status == S.STARTED:
                    self._transition(s, child, S.STOPPING, reason=reason)
            return task

    def record_pruned(self, execution_id: int, reason: str) -> bool:
        """Stop a child by the median-stopping rule (once); what that saved is counted from the
        children when they end (tasks.task_summary), since a child may still complete."""
        with self.write() as s:
            execution = s.get_one(Execution, execution_id)
            if execution.status != S.STARTED or execution.task_id is None:
                return False
            self._transition(s, execution, S.STOPPING, reason=reason)
            return True

    def _task_transition(self, s: Session, task: Task, status: str, reason: str | None = None) -> None:
        now = self.clock()
        task.status = status
        if reason is not None:
            task.status_reason = reason
        if status == T.STARTED and task.started_at is None:
            task.started_at = now
        s.add(task)
        if T(status).is_final:
            task.ended_at = now
            self._task_ended(s, task)  # its webhooks' deliveries, in this transaction
