"""The reads the HTTP API makes: executions filtered, sorted (by a column or a metadata key's latest
value) and paged in SQL, counter lookups, event pages from either end, stored commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, exists, func, or_
from sqlmodel import Session, col, select

from vh_orch.orchestrator.models import (
    Commit,
    Execution,
    MetadataNumber,
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


def _order(values: list[Any], id_column: Any, descending: bool) -> list[Any]:
    """Each value in the direction asked, NULL last either way; ties by id, in the same direction."""
    return [*(v.desc().nulls_last() if descending else v.asc().nulls_last() for v in values),
            id_column.desc() if descending else id_column.asc()]


def _narrow(where: ExecutionFilter) -> bool:
    """A filter that picks a few rows by their own index (a task's children, counters, reruns): their
    JSON is read faster than a key's index is walked past every other row."""
    return bool(where.task_ids or where.counters) or where.rerun_of is not None


def _page_by_number(s: Session, where: ExecutionFilter, conditions: list[Any], key: str, descending: bool,
                    limit: int | None, offset: int) -> list[int]:
    """The ids of one page sorted by a metadata key: the executions with a number for it read off
    metadata_number's index (key, project, value) in order, then those without one, by id."""
    numbers = table_of(MetadataNumber)
    keyed = select(numbers.c.execution_id).where(numbers.c.key == key)
    if where.project_ids is not None:
        keyed = keyed.where(numbers.c.project_id.in_(list(where.project_ids)))
    if where.statuses or where.steps or where.users:  # the rest of `conditions` is the project's, above
        keyed = keyed.join(table_of(Execution), col(Execution.id) == numbers.c.execution_id).where(*conditions)
    order = [numbers.c.value, numbers.c.execution_id]  # never NULL: no NULLS LAST, which the index cannot serve
    ids = list(s.exec(keyed.order_by(*(c.desc() if descending else c.asc() for c in order))
                      .offset(offset).limit(limit)))
    if limit is not None and len(ids) == limit:
        return ids
    # The page reaches past the numbers: the executions without one follow, by id.
    before = offset + len(ids) if ids or not offset else s.exec(
        select(func.count()).select_from(keyed.subquery())).one()
    missing = ~exists().where(numbers.c.execution_id == col(Execution.id), numbers.c.key == key)
    rest = select(col(Execution.id)).where(*conditions, missing).order_by(
        col(Execution.id).desc() if descending else col(Execution.id).asc())
    return ids + list(s.exec(rest.offset(max(0, offset - before)).limit(
        None if limit is None else limit - len(ids))))


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
        with self.read() as s:
            total = s.exec(select(func.count()).select_from(Execution).where(*conditions)).one()
            if key in SORT_COLUMNS:  # a column: its index serves the order
                value = col(getattr(Execution, key))
                query = select(Execution).where(*conditions).order_by(
                    *_order([value], col(Execution.id), descending)).offset(offset).limit(limit)
            elif key.startswith(PARAMETER_PREFIX) or _narrow(where):
                # A computed key (a parameter; a metadata value among a few rows) is worked out once per
                # row, and only (id, key) pairs are sorted; the page's rows are read by id after.
                # Sorting whole rows by a JSON expression costs several times more.
                values = (self._parameter_values(key.removeprefix(PARAMETER_PREFIX))
                          if key.startswith(PARAMETER_PREFIX) else [self._metadata_number(key)])
                keyed = select(col(Execution.id).label("id"), *(v.label(f"k{i}") for i, v in enumerate(values))
                               ).where(*conditions).subquery("keyed")
                names = [f"k{i}" for i in range(len(values))]
                page = select(keyed).order_by(*_order([keyed.c[n] for n in names], keyed.c.id, descending)
                                              ).offset(offset).limit(limit).subquery("page")
                query = select(Execution).join(page, page.c.id == col(Execution.id)).order_by(
                    *_order([page.c[n] for n in names], page.c.id, descending))
            else:
                ids = _page_by_number(s, where, conditions, key, descending, limit, offset)
                found = {e.id: e for e in s.exec(select(Execution).where(col(Execution.id).in_(ids)))}
                return total, [found[i] for i in ids if i in found]
            rows = list(s.exec(query))
        return total, rows

    def _number_and_text(self, column: Any, key: str) -> tuple[Any, Any]:
        """A JSON column's value at `key` as (its number, or NULL unless it is a JSON number; its text,
        or NULL unless it is a JSON string). On SQLite, json_type and json_extract read the path in one
        call each (SQLAlchemy's element renders a JSON_QUOTE(JSON_EXTRACT()) round trip per use)."""
        if self.engine.dialect.name == "sqlite":
            path = '$."%s"' % key
            kind, value = func.json_type(column, path), func.json_extract(column, path)
            return (case((kind.in_(["integer", "real"]), value), else_=None),
                    case((kind == "text", value), else_=None))
        element = table_of(Execution).c[column.key][key]
        kind = func.json_typeof(element)
        return (case((kind == "number", element.as_float()), else_=None),
                case((kind == "string", element.as_string()), else_=None))

    def _metadata_number(self, key: str) -> Any:
        """The latest value of a metadata key when it is a JSON number, else NULL: text, lists and
        objects sort with the executions that lack the key (a cast of text would fail on PostgreSQL)."""
        return self._number_and_text(col(Execution.metadata_latest), key)[0]

    def _parameter_values(self, name: str) -> list[Any]:
        """A parameter's value as (its number or NULL, its text or NULL): numbers sort by value,
        before text; an execution without the parameter has both NULL and comes last."""
        return list(self._number_and_text(col(Execution.parameters), name))

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
