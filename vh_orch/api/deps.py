"""What every route needs: the store and settings, who may see which project and execution, pages."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Query, Request

from vh_orch.errors import NotFound
from vh_orch.orchestrator.models import Execution, Pipeline, Project, Task, User
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings

T = TypeVar("T")
NOT_FOUND = "Not found."
MAX_LIMIT = 10_000  # the client asks for up to 9001 at once
MAX_INT = 2**63 - 1  # the database's integers: a number past it is no id, seq or offset

# Query parameters that count (seq numbers, limits, offsets): a negative number, or one past
# 64 bits, is a 400 naming the parameter (the shape of app.py's validation errors).
Count = Annotated[int | None, Query(ge=0, le=MAX_INT)]
_ID = r"\d{1,18}"
_UUID = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
PROJECT_REF = re.compile(rf"(?:{_ID}|{_UUID})", re.ASCII)
# An execution or task: its id, or PROJECT:COUNTER (`#N` for executions, `!N` for tasks) or PROJECT:latest.
ROW_REF = re.compile(rf"(?:{_ID}|(?:{_ID}|{_UUID}):(?:latest|[#!]?{_ID}))", re.ASCII)


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def not_found() -> HTTPException:
    return HTTPException(404, NOT_FOUND)


def field_error(field: str, message: str, code: str = "invalid", status: int = 400) -> HTTPException:
    """The shape the `vh` client prints as `field: * message (code: X)`."""
    return HTTPException(status, {field: [{"message": message, "code": code}]})


def parse_id(text: str | int) -> int:
    """A numeric id from a path or query; anything else is simply not found."""
    if isinstance(text, int):
        if not 0 <= text <= MAX_INT:
            raise not_found()
        return text
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise not_found()
    return int(text)


def checked_ref(name: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    """A reference given in a query parameter: malformed is a 400 naming the parameter (a well-formed
    one that names nothing the caller may see is still a 404)."""
    if pattern.fullmatch(value) is None:
        raise field_error(name, f"{value[:100]!r} is not {what}")
    return value


def project_param(request: Request, user: User, value: str, name: str = "project") -> Project:
    """The project a query parameter names (its id or UUID)."""
    checked_ref(name, value, PROJECT_REF, "a project id (a number or a UUID)")
    return visible_project(request, user, value)


def project_public_id(project_id: int) -> str:
    """A project's id as the API shows it: a UUID, as Valohai's are (`vh --project` and
    VALOHAI_PROJECT accept only UUIDs), made of the row id, so either form finds it."""
    return str(uuid.UUID(int=project_id))


def parse_project_id(text: str | int) -> int:
    if isinstance(text, int) or text.isdigit():
        return parse_id(text)
    try:
        value = uuid.UUID(text).int
    except ValueError:
        raise not_found() from None
    if value >= 2**63:
        raise not_found()
    return value


def visible_project(request: Request, user: User, project_id: str | int) -> Project:
    """The project if this user may see it; 404 otherwise, whether or not it exists."""
    store = store_of(request)
    pid = parse_project_id(project_id)
    if not store.can_see(user, pid):
        raise not_found()
    return store.get_project_by_id(pid)


def may_manage(user: User, project: Project) -> bool:
    """Whether this user manages the project's secrets and webhooks: its owner or an administrator."""
    return user.is_admin or project.owner_id == user.id


def managed_project(request: Request, user: User, project_id: str | int) -> Project:
    """The project if this user manages it (may_manage); 404 otherwise, as for one that does not exist."""
    project = visible_project(request, user, project_id)
    if not may_manage(user, project):
        raise not_found()
    return project


def visible_execution(request: Request, user: User, ref: str) -> Execution:
    """An execution by id, or by `{project_id}:{counter}` / `{project_id}:latest`; 404 unless this
    user may see its project."""
    store = store_of(request)
    return _visible(request, user, ref, "#", store.execution_by_counter, store.get_execution)


def visible_task(request: Request, user: User, ref: str) -> Task:
    """A task by id, or by `{project_id}:{counter}` / `{project_id}:latest`; 404 the same way."""
    store = store_of(request)
    return _visible(request, user, ref, "!", store.task_by_counter, store.get_task)


def visible_pipeline(request: Request, user: User, ref: str) -> Pipeline:
    """A pipeline by id, or by `{project_id}:{counter}` / `{project_id}:latest`; 404 the same way."""
    store = store_of(request)
    return _visible(request, user, ref, "=", store.pipeline_by_counter, store.get_pipeline)


def _visible(request: Request, user: User, ref: str, mark: str, by_counter: Callable[[int, int | None], T | None],
             by_id: Callable[[int], T]) -> T:
    store = store_of(request)
    project_part, sep, counter_part = ref.partition(":")
    if sep:
        project = visible_project(request, user, project_part)
        counter = None if counter_part == "latest" else parse_id(counter_part.lstrip(mark))
        found = by_counter(project.id, counter)  # type: ignore[arg-type]
        if found is None:
            raise not_found()
        return found
    try:
        row = by_id(parse_id(ref))
    except NotFound:
        raise not_found() from None
    if not store.can_see(user, row.project_id):  # type: ignore[attr-defined]
        raise not_found()
    return row


def status_filter(values: Sequence[str], known: Sequence[str], incomplete: Sequence[str]) -> list[str]:
    """Repeated or comma-separated `status=` values; `incomplete` stands for every unfinished status."""
    statuses: list[str] = []
    for value in values:
        for one in value.split(","):
            if one == "incomplete":
                statuses.extend(incomplete)
            elif one in known:
                statuses.append(one)
            elif one:
                raise field_error("status", f"unknown status {one!r}: use one of {', '.join(known)} or incomplete")
    return statuses


def counter_filter(values: Sequence[str]) -> list[int]:
    """Repeated or comma-separated `counter=` values."""
    counters = []
    for value in values:
        for one in value.split(","):
            one = one.strip()
            if not (one.isascii() and one.isdigit()) or len(one) > 18:
                raise field_error("counter", f"{one[:100]!r} is not a counter (a whole number)")
            counters.append(int(one))
    return counters


def clamp_page(limit: int | None, offset: int | None, default: int = 100) -> tuple[int, int]:
    """A page's size and start (`Count` parameters: never negative): no limit or 0 is the default."""
    limit = default if limit is None or limit <= 0 else min(limit, MAX_LIMIT)
    return limit, max(offset or 0, 0)


def page_json(request: Request, total: int, limit: int, offset: int, results: Sequence[Any]) -> dict[str, Any]:
    """A Django REST framework style page: count, next, previous (absolute URLs or None), results."""

    def at(new_offset: int) -> str:
        return str(request.url.include_query_params(limit=limit, offset=new_offset))

    return {
        "count": total,
        "next": at(offset + limit) if offset + limit < total else None,
        "previous": at(max(offset - limit, 0)) if offset > 0 else None,
        "results": list(results),
    }
