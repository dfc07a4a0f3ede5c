"""Tasks: create (the body `vh task run` sends), list, read (with every child's parameters and
latest metadata, for the task page's charts), stop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import (
    Count,
    clamp_page,
    counter_filter,
    page_json,
    project_param,
    project_public_id,
    settings_of,
    status_filter,
    store_of,
    visible_project,
    visible_task,
)
from vh_orch.api.executions import Value, as_caller, given_values, refusal
from vh_orch.api.shapes import api_base, duration_s, site
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import Task
from vh_orch.orchestrator.submit import SubmitRequest
from vh_orch.orchestrator.tasks.summary import task_title
from vh_orch.timeutil import iso
from vh_orch.values import TaskStatus

router = APIRouter(prefix="/api/v0")
INCOMPLETE = ("created", "started", "stopping")


class VariantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: str = Field(default="single", max_length=50)
    rules: dict[str, Any] = Field(default_factory=dict)


class TaskCreate(BaseModel):
    """The body `vh task run` sends (valohai-cli 0.37); `median_stopping` and `seed` are vh-orch's own.
    Fields it sends that vh-orch has no use for are accepted and ignored (tags, allow_reuse)."""

    model_config = ConfigDict(extra="ignore")

    project: str | int
    commit: str = Field(min_length=1, max_length=200)
    step: str = Field(min_length=1, max_length=1000)
    type: str = Field(default="grid_search", max_length=50)
    parameters: dict[str, VariantBody] = Field(default_factory=dict)
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    configuration: dict[str, Value] = Field(default_factory=dict)
    maximum_queued_executions: int | None = Field(default=None, ge=1)
    on_child_error: str | None = Field(default=None, max_length=50)
    task_stop_expression: str | None = Field(default=None, max_length=1000)
    environment_variables: dict[str, str | int | float | bool] = Field(default_factory=dict)
    environment: str | None = Field(default=None, max_length=200)
    image: str | None = Field(default=None, max_length=1000)
    title: str | None = Field(default=None, max_length=1000)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    median_stopping: bool | dict[str, Value] | None = None
    seed: int | None = Field(default=None, ge=0)
    tags: list[str] = Field(default_factory=list)


@router.post("/tasks/", status_code=201)
def create_task(request: Request, user: CurrentUser, body: TaskCreate) -> dict[str, Any]:
    """Start a task: a search over the step's parameters at a commit (`~<sha256>` for an uploaded
    package). Checked exactly as `vh-orch task run` checks a valohai.yaml task."""
    from vh_orch.orchestrator.wakeup import notify_daemon
    from vh_orch.orchestrator.tasks.create import TaskRequest
    from vh_orch.orchestrator.tasks.create import create_task as create

    project = visible_project(request, user, body.project)
    commit = body.commit.strip()
    adhoc = commit[1:] if commit.startswith("~") else None
    run = as_caller(request, user, SubmitRequest(
        project=project.name, step=body.step, commit=None if adhoc else commit, stored_adhoc=adhoc,
        environment=body.environment, inputs=given_values("inputs", body.inputs),
        environment_variables=given_values("environment_variables", body.environment_variables),
        image=body.image, title=body.title, priority=body.priority))
    definition: dict[str, Any] = {
        "type": body.type, "parameters": {name: v.model_dump() for name, v in body.parameters.items()},
        "configuration": body.configuration, "maximum_queued_executions": body.maximum_queued_executions,
        "on_child_error": body.on_child_error, "task_stop_expression": body.task_stop_expression,
        "median_stopping": body.median_stopping, "seed": body.seed}
    store = store_of(request)
    try:
        task = create(store, settings_of(request), TaskRequest(run=run, body=definition))
    except UserInputError as exc:
        if exc.field is None:  # a refusal of the tasks code (what submit() refuses names its field)
            exc.field = _task_field(str(exc))
        raise refusal(exc) from None
    notify_daemon(settings_of(request))
    return detail_json(request, task)


# Which request field a refusal of the tasks code (config/tasks.py, orchestrator/tasks.py) is about, by how
# its message starts, until that code names its fields as submit() does.
_TASK_FIELDS = (
    ("task parameter", "parameters"), ("task type", "type"), ("execution-count", "configuration"),
    ("execution-batch-size", "configuration"), ("optimization", "configuration"), ("engine", "configuration"),
    ("a bayesian_tpe", "configuration"), ("a random_search", "configuration"),
    ("maximum-queued", "maximum_queued_executions"), ("on-child-error", "on_child_error"),
    ("the task's stop-condition", "task_stop_expression"), ("median", "median_stopping"), ("execution ", "parameters"),
    ("the task", "parameters"), ("the grid", "parameters"), ("a manual search", "parameters"),
    # what the tasks code checks of the step and its valohai.yaml itself
    ("unknown parameter", "parameters"), ("parameter", "parameters"), ("unknown input", "inputs"), ("input", "inputs"),
    ("environment variable", "environment_variables"), ("image", "image"), ("pull policy", "environment"),
    ("unknown step", "step"), ("commit", "commit"), ("project", "commit"), ("valohai.yaml", "commit"),
    ("title", "title"), ("step", "step"))


def _task_field(message: str) -> str:
    for prefix, field in _TASK_FIELDS:
        if message.startswith(prefix):
            return field
    return "non_field_errors"


@router.get("/tasks/")
def list_tasks(
    request: Request,
    user: CurrentUser,
    project: str | None = None,
    status: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies it)
    counter: Annotated[list[str], Query()] = [],  # noqa: B006
    limit: Count = None,
    offset: Count = None,
) -> dict[str, Any]:
    """Tasks of the projects the caller may see, newest first (`status=incomplete`: every unfinished one)."""
    store = store_of(request)
    if project is not None:
        project_ids: list[int] | None = [project_param(request, user, project).id]  # type: ignore[list-item]
    else:
        project_ids = store.visible_project_ids(user)
    statuses = status_filter(status, [s.value for s in TaskStatus], INCOMPLETE)
    counters = counter_filter(counter)
    limit, offset = clamp_page(limit, offset)
    tasks, total = store.list_tasks(project_ids=project_ids, statuses=statuses, counters=counters, limit=limit,
                                    offset=offset)
    counts = store.task_child_counts([t.id for t in tasks])  # type: ignore[misc]
    names = store.project_names()
    return page_json(request, total, limit, offset,
                     [task_json(request, t, names.get(t.project_id, "?"), counts.get(t.id, {})) for t in tasks])  # type: ignore[arg-type]


@router.get("/tasks/{ref}/", name="task")
def task(request: Request, user: CurrentUser, ref: str) -> dict[str, Any]:
    """One task, by id or `{project_id}:{counter}` (or `:latest`), with its children (each one's
    parameters, status and latest metadata), its best child and its definition."""
    return detail_json(request, visible_task(request, user, ref))


@router.post("/tasks/{ref}/stop/", name="stop_task")
def stop_task(request: Request, user: CurrentUser, ref: str) -> dict[str, Any]:
    """Stop a task and its executions (queued ones at once, running ones within seconds; outputs kept)."""
    from vh_orch.orchestrator.wakeup import notify_daemon

    t = visible_task(request, user, ref)
    store = store_of(request)
    if not TaskStatus(t.status).is_final:
        t = store.stop_task(t.id, f"stopped by {user.name}")  # type: ignore[arg-type]
        notify_daemon(settings_of(request))
    return {"id": t.id, "counter": t.counter, "status": t.status, "message": f"task !{t.counter} is {t.status}"}


def task_json(request: Request, t: Task, project_name: str, counts: dict[str, int]) -> dict[str, Any]:
    here = f"{api_base(request)}/tasks/{t.id}/"
    return {
        "id": t.id,
        "counter": t.counter,
        "url": here,
        "status": t.status,
        "status_reason": t.status_reason,
        "title": task_title(t),
        "name": t.name,
        "type": t.type,
        "step": t.step,
        "project": {"id": project_public_id(t.project_id), "name": project_name},
        "creator": {"username": t.user},
        "counts": counts,
        "execution_count": sum(counts.values()),
        "ctime": iso(t.created_at),
        "started_at": iso(t.started_at) if t.started_at else None,
        "ended_at": iso(t.ended_at) if t.ended_at else None,
        "urls": {"display": f"{site(request)}/tasks/{t.id}/", "stop": f"{here}stop/"},
    }


def detail_json(request: Request, t: Task) -> dict[str, Any]:
    from vh_orch.orchestrator.tasks.summary import spec_of, task_summary

    store = store_of(request)
    children = store.task_children(t.id)  # type: ignore[arg-type]
    summary = task_summary(store, t, children)
    spec = spec_of(t)
    out = task_json(request, t, store.get_project_by_id(t.project_id).name, summary["counts"])
    out.update({
        "planned": summary["planned"],
        "best": summary["best"],
        "median_stopping": summary["median_stopping"],
        "cost_usd": summary["cost_usd"],
        "configuration": {
            "execution_count": spec.execution_count, "execution_batch_size": spec.batch_size,
            "maximum_queued_executions": spec.max_queued, "optimization_target_metric": spec.target_metric,
            "optimization_target_value": spec.target_value, "on_child_error": spec.on_child_error,
            "stop_condition": spec.stop_condition, "seed": spec.seed},
        "parameters": {v.name: {"style": v.style, "rules": v.rules} for v in spec.variants},
        "executions": [{
            "id": c.id, "counter": c.counter, "index": c.task_index, "status": c.status,
            "status_reason": c.status_reason, "parameters": {v.name: c.parameters.get(v.name) for v in spec.variants},
            "metadata": c.metadata_latest, "duration": duration_s(c),
            "urls": {"display": f"{site(request)}/executions/{c.id}/"}} for c in children],
    })
    return out
