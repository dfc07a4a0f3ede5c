"""Executions: submit, list (filtered, sorted by a column or a metadata key, paged), read, follow, stop,
run again. Valohai's shapes where the `vh` client reads them, vh-orch's own fields beside them."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import (
    MAX_INT,
    ROW_REF,
    Count,
    checked_ref,
    clamp_page,
    counter_filter,
    field_error,
    page_json,
    project_param,
    settings_of,
    status_filter,
    store_of,
    visible_execution,
    visible_project,
    visible_task,
)
from vh_orch.api.shapes import event_json, event_rows_json, execution_json
from vh_orch.api.streams import HeldStream
from vh_orch.bootstrap.gpus import MAX_GPUS
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import Execution, User
from vh_orch.orchestrator.store.queries import ExecutionFilter
from vh_orch.orchestrator.submit import SubmitRequest, submit
from vh_orch.services import executions as executions_service
from vh_orch.services import logs as logs_service
from vh_orch.timeutil import iso
from vh_orch.values import FINAL_STATUSES, ExecutionStatus

router = APIRouter(prefix="/api/v0")
INCOMPLETE = ("created", "queued", "started", "stopping")
STREAM_POLL_S = 0.05
STREAM_KEEPALIVE_S = 15.0
DEFAULT_EVENTS = 5000

Value = str | int | float | bool | None


class ExecutionCreate(BaseModel):
    """The body `vh exec run` sends (fields it sends that vh-orch has no use for are accepted and ignored:
    tags, runtime_config, environment_variable_groups)."""

    model_config = ConfigDict(extra="ignore")

    project: str | int
    commit: str = Field(min_length=1, max_length=200)
    step: str = Field(min_length=1, max_length=1000)
    parameters: dict[str, Value | list[Value]] = Field(default_factory=dict)
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    environment_variables: dict[str, str | int | float | bool] = Field(default_factory=dict)
    environment: str | None = Field(default=None, max_length=200)
    image: str | None = Field(default=None, max_length=1000)
    title: str | None = Field(default=None, max_length=1000)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    time_limit: int | None = Field(default=None, ge=0)
    tags: list[str] = Field(default_factory=list)
    # vh-orch's own: GPUs it gets to itself (unset: the step's resources.devices, else the environment's default)
    gpus: int | None = Field(default=None, ge=0, le=MAX_GPUS, strict=True)


class RunAgain(BaseModel):
    """Run an execution again: the same commit, step, inputs and environment, with these changes."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Value | list[Value]] = Field(default_factory=dict)
    inputs: dict[str, str | list[str]] | None = None
    commit: str | None = Field(default=None, min_length=1, max_length=200)  # `~<sha256>`: an uploaded package
    environment: str | None = Field(default=None, max_length=200)
    image: str | None = Field(default=None, max_length=1000)
    title: str | None = Field(default=None, max_length=1000)
    priority: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)


# -- submitting ----------------------------------------------------------------------------------

@router.post("/executions/", status_code=201)
def create_execution(request: Request, user: CurrentUser, body: ExecutionCreate) -> dict[str, Any]:
    """Queue an execution of a step at a commit (`~<sha256>` for an uploaded package). Values are
    checked exactly as `vh-orch exec run` checks them; the quota is the caller's."""
    project = visible_project(request, user, body.project)
    commit = body.commit.strip()
    adhoc = commit[1:] if commit.startswith("~") else None
    parameters = given_values("parameters", body.parameters)
    inputs = given_values("inputs", body.inputs)
    env_vars = given_values("environment_variables", body.environment_variables)
    return _submit(request, user, SubmitRequest(
        project=project.name, step=body.step, commit=None if adhoc else commit, stored_adhoc=adhoc,
        environment=body.environment, parameters=parameters, inputs=inputs, environment_variables=env_vars,
        image=body.image, title=body.title, priority=body.priority, gpus=body.gpus))


@router.post("/executions/{ref}/run-again/", status_code=201)
def run_again(request: Request, user: CurrentUser, ref: str, body: RunAgain) -> dict[str, Any]:
    """A new execution like this one (same commit, step, inputs, environment variables), with the
    parameters given here replacing its own, and the inputs, commit, environment, image and title
    given here instead of its own."""
    store = store_of(request)
    e = visible_execution(request, user, ref)
    project = store.get_project_by_id(e.project_id)
    commit = store.get_commit(e.commit_id)
    params = {**e.parameters, **body.parameters}
    inputs = e.inputs if body.inputs is None else body.inputs
    git, adhoc = (commit.identifier, None) if commit.kind == "git" else (None, commit.identifier)
    if body.commit is not None and body.commit.strip():
        asked = body.commit.strip()
        git, adhoc = (None, asked[1:]) if asked.startswith("~") else (asked, None)
    return _submit(request, user, SubmitRequest(
        project=project.name, step=e.step, commit=git, stored_adhoc=adhoc,
        environment=body.environment or store.get_environment_by_id(e.environment_id).name,
        parameters=given_values("parameters", params), inputs=given_values("inputs", inputs),
        environment_variables={name: [value] for name, value in e.environment_variables.items()},
        image=body.image or e.image, title=body.title if body.title is not None else e.title,
        priority=_again_priority(request, user, e.priority) if body.priority is None else body.priority,
        rerun_of_id=e.id))


def _again_priority(request: Request, user: User, priority: int) -> int:
    """An execution run again keeps its priority, up to what the caller may give (an administrator's
    high-priority run, run again by a user, gets the user's highest)."""
    return priority if user.is_admin else min(priority, settings_of(request).max_user_priority)


def as_caller(request: Request, user: User, req: SubmitRequest) -> SubmitRequest:
    """A request from the API: the caller's, with remote rules (inputs are URLs; a datum:// input
    must be an output of a project the caller may see)."""
    from dataclasses import replace

    store = store_of(request)
    visible = store.visible_project_ids(user)

    def datum_visible(datum_id: str) -> bool:
        if visible is None:
            return True
        return store.get_execution(store.get_output(datum_id).execution_id).project_id in visible

    return replace(req, user=user.name, remote=True, datum_visible=datum_visible, restricted=not user.is_admin)


def _submit(request: Request, user: User, req: SubmitRequest) -> dict[str, Any]:
    from vh_orch.orchestrator.wakeup import notify_daemon

    store = store_of(request)
    settings = settings_of(request)
    req = as_caller(request, user, req)
    try:
        execution = submit(store, settings, req)
    except UserInputError as exc:
        raise refusal(exc) from None
    notify_daemon(settings)
    return _one(request, execution)


def refusal(exc: UserInputError) -> HTTPException:
    """A refused submission as a 400 naming the field the refusal is about (submit() names it)."""
    code = "does_not_exist" if isinstance(exc, NotFound) else "invalid"
    return field_error(exc.field or "non_field_errors", str(exc), code=code)


def given_values(field: str, values: Mapping[str, Any]) -> dict[str, list[Value]]:
    """A body's typed values, per name, as submit() takes them: a list is a multi-value parameter (or
    several URLs); null or [] is "not given". Names are trimmed, as the command line's are."""
    given: dict[str, list[Value]] = {}
    for name, value in values.items():
        if "=" in name or not name.strip():  # what no name on a command line can be
            raise field_error(field, f"{name!r} is not a valid name")
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if isinstance(item, float) and not math.isfinite(item):
                raise field_error(field, f"{name}: {item} is not a finite number")
            given.setdefault(name.strip(), []).append(item)
    return given


# -- reading -------------------------------------------------------------------------------------

@router.get("/executions/")
def list_executions(
    request: Request,
    user: CurrentUser,
    project: str | None = None,
    status: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies it)
    step: Annotated[list[str], Query()] = [],  # noqa: B006
    creator: Annotated[list[str], Query()] = [],  # noqa: B006
    counter: Annotated[list[str], Query()] = [],  # noqa: B006
    task: Annotated[list[str], Query()] = [],  # noqa: B006
    ordering: str = "-counter",
    limit: Count = None,
    offset: Count = None,
) -> dict[str, Any]:
    """Executions of the projects the caller may see. Filters repeat (`status=queued&status=started`;
    `status=incomplete` is every unfinished one); `ordering` is a column, a metadata key or a parameter,
    `-` first for descending (`ordering=-metadata.accuracy` or `-accuracy`: the latest value printed;
    `ordering=parameters.learning_rate`: the value it ran with)."""
    store = store_of(request)
    if project is not None:
        project_ids: list[int] | None = [project_param(request, user, project).id]  # type: ignore[list-item]
    else:
        project_ids = store.visible_project_ids(user)
    statuses = status_filter(status, [s.value for s in ExecutionStatus], INCOMPLETE)
    counters = counter_filter(counter)
    task_ids = [visible_task(request, user, checked_ref("task", one, ROW_REF, "a task id or PROJECT:COUNTER")).id
                for value in task for one in value.split(",") if one]
    try:
        order = executions_service.ordering(ordering, default="-counter")
    except UserInputError as exc:
        raise field_error(exc.field or "ordering", str(exc)) from None
    limit, offset = clamp_page(limit, offset)
    total, rows = executions_service.list_executions(
        store, ExecutionFilter(project_ids=project_ids, statuses=statuses, steps=step, users=creator,
                               counters=counters, task_ids=task_ids), order, limit, offset)  # type: ignore[arg-type]
    return page_json(request, total, limit, offset, many(request, rows))


@router.get("/executions/{ref}/", name="execution")
def execution(request: Request, user: CurrentUser, ref: str) -> dict[str, Any]:
    """One execution, by id or `{project_id}:{counter}` (or `:latest`). A `datum://` input names the
    execution whose output it is (`inputs[].outputs_of`), when the caller may see that execution; and
    its links to "run again": `rerun_of` and `reruns`."""
    e = visible_execution(request, user, ref)
    out = _one(request, e)
    store = store_of(request)
    for entry in out["inputs"]:
        sources = []
        for input_url in entry["urls"]:
            source = None
            if input_url.startswith("datum://"):
                try:
                    producer = store.get_execution(store.get_output(input_url.removeprefix("datum://")).execution_id)
                except NotFound:
                    producer = None
                if producer is not None and store.can_see(user, producer.project_id):
                    source = {"id": producer.id, "counter": producer.counter}
            sources.append(source)
        entry["outputs_of"] = sources
    return {**out, **rerun_links(request, user, e)}


MAX_RERUNS = 50


def rerun_links(request: Request, user: User, e: Execution) -> dict[str, Any]:
    """The execution this one was run again from (`rerun_of`) and the newest executions run again from
    it (`reruns`), each only when the caller may see it."""
    store = store_of(request)
    source = None
    if e.rerun_of_id is not None:
        found = store.find_execution(e.rerun_of_id)
        if found is not None and store.can_see(user, found.project_id):
            source = _link(found)
    where = ExecutionFilter(project_ids=store.visible_project_ids(user), rerun_of=e.id)
    _, reruns = store.query_executions(where, sort="-id", limit=MAX_RERUNS)
    return {"rerun_of": source, "reruns": [_link(r) for r in reruns]}


def _link(e: Execution) -> dict[str, Any]:
    return {"id": e.id, "counter": e.counter, "title": e.title, "status": e.status}


@router.post("/executions/{ref}/stop/", name="stop_execution")
def stop_execution(request: Request, user: CurrentUser, ref: str) -> dict[str, Any]:
    """Stop it: a queued one at once, a running one within seconds (its outputs are kept)."""
    from vh_orch.orchestrator.wakeup import notify_daemon

    e = visible_execution(request, user, ref)
    store = store_of(request)
    if e.status not in FINAL_STATUSES:
        e = store.request_stop(e.id, f"stopped by {user.name}")  # type: ignore[arg-type]
        notify_daemon(settings_of(request))
    return {"id": e.id, "counter": e.counter, "status": e.status,
            "message": f"execution #{e.counter} is {e.status}"}


@router.get("/executions/{ref}/step/", name="execution_step")
def execution_step(request: Request, user: CurrentUser, ref: str) -> dict[str, Any]:
    """The step this execution ran, from its commit's valohai.yaml: each parameter's type, bounds,
    choices and default, and the value this execution had (what a "run again" form is made of)."""
    from vh_orch.config.steps import get_step, load_config
    from vh_orch.services.definitions import parameter_dict

    e = visible_execution(request, user, ref)
    step = get_step(load_config(store_of(request).get_commit(e.commit_id).config_yaml).config, e.step)
    return {"name": step.name, "parameters": [
        parameter_dict(name, p) | {"value": e.parameters.get(name)} for name, p in step.parameters.items()],
        "inputs": [{"name": name, "urls": e.inputs.get(name, [])} for name in step.inputs]}


@router.get("/executions/{ref}/events/", name="execution_events", response_model=None)
def events(request: Request, user: CurrentUser, ref: str, limit: Count = None, after: Count = None,
           before: Count = None, search: Annotated[str | None, Query(max_length=1000)] = None
           ) -> dict[str, Any] | Response:
    """Log lines and status changes in order. Without `after`: the last `limit` (default 5000; 0 is
    all), with `truncated` when there were more; `after=SEQ` pages forward, `before=SEQ` back.
    `search=TEXT`: instead, the log lines of the whole log holding TEXT (a plain substring, any case,
    at most 200 characters), the first 1000 of them (`truncated` when there were more)."""
    e = visible_execution(request, user, ref)
    store = store_of(request)
    if search is not None:
        try:
            found, more = logs_service.search_log(store, e.id, search)  # type: ignore[arg-type]
        except UserInputError as exc:
            raise field_error(exc.field or "search", str(exc)) from None
        return {"total": e.last_seq, "truncated": more, "status": e.status, "search": search,
                "events": [event_json(ev) for ev in found]}
    total = e.last_seq
    wanted = total if limit == 0 else min(limit or DEFAULT_EVENTS, 100_000)
    page = store.event_rows_page(e.id, after=after, before=before, limit=max(wanted, 1))  # type: ignore[arg-type]
    truncated = after is None and bool(page) and page[0][0] > 1
    # Spelt here rather than by the framework: a page is up to 100,000 lines.
    return Response(f'{{"total":{total},"truncated":{json.dumps(truncated)},"status":{json.dumps(e.status)},'
                    f'"events":{event_rows_json(page)}}}', media_type="application/json")


@router.get("/executions/{ref}/log.txt", name="execution_log_text")
def log_text(request: Request, user: CurrentUser, ref: str) -> StreamingResponse:
    """The whole log as text, each stdout and stderr line in order (what `vh-orch exec logs --raw`
    prints), streamed a page at a time; saved as `PROJECT-COUNTER-log.txt`."""
    e = visible_execution(request, user, ref)
    store = store_of(request)
    project = store.get_project_by_id(e.project_id)
    filename = _safe_filename(f"{project.name}-{e.counter}-log.txt")
    lines = logs_service.log_text(store, e.id)  # type: ignore[arg-type]
    return StreamingResponse(lines, media_type="text/plain; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Cache-Control": "no-store"})


def _safe_filename(name: str) -> str:
    """A name that fits inside a quoted Content-Disposition filename: ASCII letters, digits, . _ -."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)


@router.get("/executions/{ref}/metadata/", name="execution_metadata")
def metadata(request: Request, user: CurrentUser, ref: str, after: Count = None) -> dict[str, Any]:
    """Every metadata point printed (with `_time` and its event `_seq`), from after seq `after`; and the
    latest value of every key."""
    e = visible_execution(request, user, ref)
    points = store_of(request).metadata_after(e.id, after or 0)  # type: ignore[arg-type]
    return {"latest": e.metadata_latest,
            "points": [{**p.data, "_time": iso(p.time), "_seq": p.seq} for p in points]}


@router.get("/executions/{ref}/utilization/", name="execution_utilization")
def utilization(request: Request, user: CurrentUser, ref: str, after: str | None = None) -> dict[str, Any]:
    """The hardware use sampled while it ran, in time order: CPU (100 = one core), memory in bytes and
    each GPU it was given; with `after` (a sample's `time`), only the samples after it. Also its
    peak memory, and how often the daemon samples (`interval_s`; 0: never)."""
    from vh_orch.services import utilization as utilization_service

    e = visible_execution(request, user, ref)
    try:
        since = None if after is None else utilization_service.sample_time(after)
    except UserInputError as exc:
        raise field_error(exc.field or "after", str(exc)) from None
    return {"peak_memory_bytes": e.peak_memory_bytes, "interval_s": settings_of(request).utilization_interval_s,
            "samples": utilization_service.samples(store_of(request), e.id, since)}  # type: ignore[arg-type]


@router.get("/executions/{ref}/stream/", name="execution_stream")
async def stream(request: Request, user: CurrentUser, ref: str, after: Count = None,
                 last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """Server-Sent Events: every event stored after seq `after` (or the `Last-Event-ID` a reconnecting
    browser sends), as it is stored: `event: log` / `status` / `metadata` with the event as JSON
    data and its seq as id; `event: end` once the execution has ended and everything was sent.
    A user follows at most api/streams.MAX_STREAMS_PER_USER streams at once; the next is a 429."""
    e = await run_in_threadpool(visible_execution, request, user, ref)
    if last_event_id:
        if not (last_event_id.isascii() and last_event_id.isdigit()) or int(last_event_id) > MAX_INT:
            raise field_error("Last-Event-ID", f"{last_event_id[:100]!r} is not an event's seq (a whole number)")
        after = int(last_event_id)
    slots = request.app.state.streams
    response = HeldStream(_event_stream(request, e.id, after or 0), slots, user.id,  # type: ignore[arg-type]
                          media_type="text/event-stream", headers={"Cache-Control": "no-store",
                                                                   "X-Accel-Buffering": "no"})
    slots.take(user.id)
    return response


async def _event_stream(request: Request, execution_id: int, after: int) -> AsyncIterator[str]:
    store = store_of(request)
    loop = asyncio.get_running_loop()
    last = after
    metadata_seq = after
    quiet_since = loop.time()
    yield "retry: 1000\n\n"
    while True:
        current = await run_in_threadpool(store.get_execution, execution_id)
        if current.last_seq > last:
            page = await run_in_threadpool(store.events_page, execution_id, after=last, limit=1000)
            points = await run_in_threadpool(store.metadata_after, execution_id, metadata_seq)
            for ev in page:
                kind = "log" if ev.kind == "log" else "status"
                yield f"id: {ev.seq}\nevent: {kind}\ndata: {json.dumps(event_json(ev))}\n\n"
            for p in points:
                if p.seq <= (page[-1].seq if page else last):
                    yield f"event: metadata\ndata: {json.dumps({**p.data, '_time': iso(p.time), '_seq': p.seq})}\n\n"
                    metadata_seq = p.seq
            if page:
                last = page[-1].seq
            quiet_since = loop.time()
            continue
        if current.status in FINAL_STATUSES:
            yield f"event: end\ndata: {json.dumps({'status': current.status, 'reason': current.status_reason})}\n\n"
            return
        if await request.is_disconnected():
            return
        if loop.time() - quiet_since > STREAM_KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet_since = loop.time()
        await asyncio.sleep(STREAM_POLL_S)


def _one(request: Request, e: Execution) -> dict[str, Any]:
    return many(request, [e])[0]


def many(request: Request, rows: list[Execution]) -> list[dict[str, Any]]:
    store = store_of(request)
    projects = store.project_names()
    envs = store.environment_names()
    commits = store.commits_by_id([e.commit_id for e in rows])
    pipelines = store.node_pipelines([e.pipeline_node_id for e in rows if e.pipeline_node_id is not None])
    return [execution_json(request, e, projects.get(e.project_id, "?"), envs.get(e.environment_id, "?"),
                           commits.get(e.commit_id),
                           None if e.pipeline_node_id is None else pipelines.get(e.pipeline_node_id)) for e in rows]
