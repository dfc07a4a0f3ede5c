"""The reads the HTTP API makes: executions filtered, sorted (by a column or a metadata key's latest
value) and paged in SQL, counter lookups, event pages from either end, stored commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, or_
from sqlmodel import col, select

from vh_orch.orchestrator.models import (
    Commit,
    Execution,
    MetadataPoint,
    Output,
    Project,
    ProjectMember,
    User,
)
from vh_orch.orchestrator.store.database import Database, table_of

# Columns an execution list may be sorted by; anything else is a metadata key.
SORT_COLUMNS = ("id", "counter", "status", "step", "created_at", "queued_at", "started_at", "ended_at",
                "exit_code", "priority", "title", "user", "environment_id", "project_id")
PARAMETER_PREFIX = "parameters."  # a sort key `parameters.NAME` orders by that parameter's value


@dataclass(frozen=True)
class ExecutionFilter:
    """Which executions: None or empty means no restriction on that field."""

    project_ids: Sequence[int] | None = None  # None: every project (an administrator)
    statuses: Sequence[str] = field(default_factory=tuple)
    steps: Sequence[str] = field(default_factory=tuple)
    users: Sequence[str] = field(default_factory=tuple)
    counters: Sequence[int] = field(default_factory=tuple)
    task_ids: Sequence[int] = field(default_factory=tuple)  # children of these tasks
    rerun_of: int | None = None  # made by "run again" from this execution


class QueriesStore(Database):

    def visible_project_ids(self, user: User) -> list[int] | None:
        """The ids of the projects a user may see; None for an administrator (all of them)."""
        if user.is_admin:
            return None
        members = select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)
        with self.read() as s:
            return list(s.exec(select(Project.id).where(
                or_(Project.owner_id == user.id, col(Project.id).in_(members)))))

    def find_commit(self, project_id: int, kind: str, identifier: str) -> Commit | None:
        with self.read() as s:
            return s.exec(select(Commit).where(Commit.project_id == project_id, Commit.kind == kind,
                                               Commit.identifier == identifier)).first()

    def execution_by_counter(self, project_id: int, counter: int | None) -> Execution | None:
        """The project's execution with this counter; its newest when counter is None."""
        query = select(Execution).where(Execution.project_id == project_id)
        if counter is None:
            query = query.order_by(col(Execution.counter).desc()).limit(1)
        else:
            query = query.where(Execution.counter == counter)
        with self.read() as s:
            return s.exec(query).first()

    def query_executions(self, where: ExecutionFilter, sort: str = "-id", limit: int = 100,
                         offset: int = 0) -> tuple[int, list[Execution]]:
        """(how many match, one page of them). `sort` is a column or a metadata key, `-` first for
        descending; executions without a value for a metadata key come last either way. Ties
        are broken by id, in the same direction, so pages never overlap."""
        conditions = []
        if where.project_ids is not None:
            conditions.append(col(Execution.project_id).in_(list(where.project_ids)))
        for column, values in ((Execution.status, where.statuses), (Execution.step, where.steps),
                               (Execution.user, where.users), (Execution.counter, where.counters),
                               (Execution.task_id, where.task_ids)):
            if values:
                conditions.append(col(column).in_(list(values)))
        if where.rerun_of is not None:
            conditions.append(col(Execution.rerun_of_id) == where.rerun_of)
        descending = sort.startswith("-")
        key = sort.lstrip("-+")
        if key in SORT_COLUMNS:
            values = [col(getattr(Execution, key))]
        elif key.startswith(PARAMETER_PREFIX):
            values = self._parameter_values(key.removeprefix(PARAMETER_PREFIX))
        else:
            values = [self._metadata_number(key)]
        order = [*(v.is_(None) for v in values), *(v.desc() if descending else v.asc() for v in values),
                 col(Execution.id).desc() if descending else col(Execution.id).asc()]
        with self.read() as s:
            total = s.exec(select(func.count()).select_from(Execution).where(*conditions)).one()
            rows = list(s.exec(select(Execution).where(*conditions).order_by(*order).offset(offset).limit(limit)))
        return total, rows

    def _metadata_number(self, key: str) -> Any:
        """The latest value of a metadata key when it is a JSON number, else NULL: text, lists and
        objects sort with the executions that lack the key (a cast of text would fail on PostgreSQL)."""
        element = table_of(Execution).c.metadata_latest[key]
        if self.engine.dialect.name == "sqlite":
            numeric = func.json_type(element).in_(["integer", "real"])
        else:
            numeric = func.json_typeof(element) == "number"
        return case((numeric, element.as_float()), else_=None)

    def _parameter_values(self, name: str) -> list[Any]:
        """A parameter's value as (its number or NULL, its text or NULL): numbers sort by value,
        before text; an execution without the parameter has both NULL and comes last."""
        element = table_of(Execution).c.parameters[name]
        if self.engine.dialect.name == "sqlite":
            kind = func.json_type(element)
            numeric, text = kind.in_(["integer", "real"]), kind == "text"
        else:
            kind = func.json_typeof(element)
            numeric, text = kind == "number", kind == "string"
        return [case((numeric, element.as_float()), else_=None), case((text, element.as_string()), else_=None)]

    def metadata_after(self, execution_id: int, after: int = 0, limit: int = 100_000) -> list[MetadataPoint]:
        with self.read() as s:
            return list(s.exec(select(MetadataPoint).where(
                MetadataPoint.execution_id == execution_id, MetadataPoint.seq > after)
                .order_by(col(MetadataPoint.seq)).limit(limit)))

    def outputs_page(self, execution_ids: Sequence[int], limit: int, offset: int) -> tuple[int, list[Output]]:
        condition = col(Output.execution_id).in_(list(execution_ids))
        with self.read() as s:
            total = s.exec(select(func.count()).select_from(Output).where(condition)).one()
            rows = list(s.exec(select(Output).where(condition)
                               .order_by(col(Output.execution_id), col(Output.name)).offset(offset).limit(limit)))
        return total, rows

    def status_counts(self, project_id: int) -> dict[str, int]:
        with self.read() as s:
            return dict(s.exec(select(Execution.status, func.count()).where(Execution.project_id == project_id)
                               .group_by(Execution.status)).all())

    def commits_by_id(self, ids: Sequence[int]) -> dict[int, Commit]:
        if not ids:
            return {}
        with self.read() as s:
            return {c.id: c for c in s.exec(select(Commit).where(col(Commit.id).in_(list(set(ids)))))}  # type: ignore[misc]

    def adhoc_commits(self, project_id: int) -> list[Commit]:
        with self.read() as s:
            return list(s.exec(select(Commit).where(Commit.project_id == project_id, Commit.kind == "adhoc")
                               .order_by(col(Commit.id).desc())))
