"""Pipelines: create (the payload `vh pipeline run` posts: valohai-yaml's converted pipeline), list,
read (by id, `{project_id}:{counter}` or `{project_id}:latest`), stop. Valohai's shapes where the
`vh` client reads them (`counter`, `urls.display`, `nodes[].id`, `url`), vh-orch's own beside them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import (
    MAX_INT,
    Count,
    clamp_page,
    counter_filter,
    field_error,
    page_json,
    project_param,
    project_public_id,
    settings_of,
    status_filter,
    store_of,
    visible_pipeline,
    visible_project,
)
from vh_orch.api.executions import as_caller, refusal
from vh_orch.api.shapes import api_base, commit_identifier, pipeline_page, site
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import Execution, Pipeline, PipelineNode, Task, User
from vh_orch.orchestrator.submit import SubmitRequest
from vh_orch.timeutil import iso
from vh_orch.values import PipelineStatus

router = APIRouter(prefix="/api/v0")
INCOMPLETE = ("created", "started", "stopping")
# `ordering` values the list takes (the client sends -counter); ids and counters grow together.
ORDERINGS = {"-counter": False, "-ctime": False, "-id": False, "counter": True, "ctime": True, "id": True}
MAX_TAGS = 100


class PipelineCreate(BaseModel):
    """The body `vh pipeline run` sends (valohai-cli 0.37): the converted pipeline (`nodes`, `edges`,
    `parameters`, `reuse_executions`) with the project and a title. The nodes, edges and parameters
    are checked by orchestrator/pipelines/spec.py, which names what is wrong; `tags` are accepted and
    ignored. `commit` is vh-orch's own: the pipeline's commit when its nodes name none (the client
    writes the commit it resolved into every node's template)."""

    model_config = ConfigDict(extra="ignore")

    project: str | int
    title: str | None = Field(default=None, max_length=1000)
    tags: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=MAX_TAGS)
    nodes: list[Any]
    edges: list[Any] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    reuse_executions: Any = False
    commit: str | None = Field(default=None, min_length=1, max_length=200)


@router.post("/pipelines/", status_code=201)
def create_pipeline(request: Request, user: CurrentUser, body: PipelineCreate) -> dict[str, Any]:
    """Start a pipeline: every node is checked against its step (as `vh-orch pipeline run` checks a
    valohai.yaml pipeline) and nothing is written unless all of them pass; then its first nodes start."""
    from vh_orch.orchestrator.pipelines.create import PipelineRequest
    from vh_orch.orchestrator.pipelines.engine import start_pipeline
    from vh_orch.orchestrator.wakeup import notify_daemon

    project = visible_project(request, user, body.project)
    _check_reused(request, user, body.nodes)
    commit = _pipeline_commit(request, body)
    adhoc = commit[1:] if commit.startswith("~") else None
    run = as_caller(request, user, SubmitRequest(
        project=project.name, step="", commit=None if adhoc else commit, stored_adhoc=adhoc, title=body.title))
    payload = {"nodes": [_own_commit(node, commit) for node in body.nodes], "edges": body.edges,
               "parameters": body.parameters, "reuse_executions": body.reuse_executions}
    store = store_of(request)
    try:
        pipeline = start_pipeline(store, settings_of(request), PipelineRequest(run=run, payload=payload,
                                                                               title=body.title))
    except UserInputError as exc:
        exc.field = _field_of(str(exc), exc.field)
        raise refusal(exc) from None
    notify_daemon(settings_of(request))
    return detail_json(request, store.get_pipeline(pipeline.id))  # type: ignore[arg-type]


def _pipeline_commit(request: Request, body: PipelineCreate) -> str:
    """The commit the pipeline runs: the body's `commit`, else the one its first execution or task node
    names (the client writes the same into each), else, for a pipeline of `--reuse` nodes only, the
    commit of the pipeline the first one reuses from (_check_reused has made sure the caller sees it)."""
    if body.commit is not None:
        return body.commit.strip()
    for node in body.nodes:
        template = node.get("template") if isinstance(node, dict) else None
        if isinstance(template, dict) and template.get("commit") not in (None, ""):
            named = template["commit"]
            if not isinstance(named, str) or len(named) > 200:
                raise field_error("nodes", f"node {str(node.get('name'))[:200]!r}: its template's commit must be "
                                  "a commit identifier (text)")
            return named.strip()
    store = store_of(request)
    for node in body.nodes:
        source = node.get("source") if isinstance(node, dict) else None
        if isinstance(source, int) and not isinstance(source, bool):
            pipeline = store.get_pipeline(store.get_pipeline_node(source).pipeline_id)
            return commit_identifier(store.get_commit(pipeline.commit_id))
    raise field_error("nodes", "no node names the commit to run: give each execution or task node a template "
                      "with its `commit` (as `vh pipeline run` does), or the body a `commit`")


def _check_reused(request: Request, user: User, nodes: list[Any]) -> None:
    """A node that stands for earlier work (a `--reuse` mimic's `source` node, Valohai's
    `reuse_execution_id`) may only name work the caller may see: its results become this pipeline's.
    Values that are no id are left to spec.py, which names them."""
    store = store_of(request)
    for node in nodes:
        if not isinstance(node, dict):
            continue
        name = str(node.get("name"))[:200]
        for key, what, find in (("source", "source pipeline node", _node_project),
                                ("reuse_execution_id", "reused execution", _execution_project),
                                ("reuse-execution-id", "reused execution", _execution_project)):
            value = node.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            in_range = 0 < value <= MAX_INT
            project = find(request, value) if in_range else None
            if project is None or not store.can_see(user, project):
                raise field_error("nodes", f"node {name!r}: {what} {value if in_range else '(out of range)'} "
                                  "is not one you can see "
                                  "(`vh pipeline list` shows your pipelines)", code="does_not_exist")


def _node_project(request: Request, node_id: int) -> int | None:
    store = store_of(request)
    try:
        return store.get_pipeline(store.get_pipeline_node(node_id).pipeline_id).project_id
    except NotFound:
        return None


def _execution_project(request: Request, execution_id: int) -> int | None:
    try:
        return store_of(request).get_execution(execution_id).project_id
    except NotFound:
        return None


def _own_commit(node: Any, commit: str) -> Any:
    """A node whose template names the pipeline's own commit runs from the pipeline's commit (spec.py:
    a template `commit` of None), however the client spelled it (`~sha256` for an ad-hoc package)."""
    if isinstance(node, dict) and isinstance(node.get("template"), dict):
        named = node["template"].get("commit")
        if isinstance(named, str) and named.strip() == commit:
            return {**node, "template": {**node["template"], "commit": None}}
    return node


def _field_of(message: str, field: str | None) -> str:
    """The body's field a refusal is about. A node's step refusing a value (create.py: `node 'NAME': ...`,
    named after the step's own field) is about `nodes`: this body's `parameters` are the pipeline's."""
    if message.startswith("node "):
        return "nodes"
    if field is not None:
        return field
    for key in ("nodes", "edges", "parameters"):
        if message.startswith(f"pipeline[{key!r}]"):
            return key
    if message.startswith("title"):
        return "title"
    return "non_field_errors"


# -- reading -------------------------------------------------------------------------------------

@router.get("/pipelines/")
def list_pipelines(
    request: Request,
    user: CurrentUser,
    project: str | None = None,
    status: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies it)
    counter: Annotated[list[str], Query()] = [],  # noqa: B006
    creator: Annotated[list[str], Query()] = [],  # noqa: B006
    deleted: bool = False,
    ordering: str = "-counter",
    limit: Count = None,
    offset: Count = None,
) -> dict[str, Any]:
    """Pipelines of the projects the caller may see, newest first (`ordering=counter`: oldest first;
    `status=incomplete`: every unfinished one; `creator`: a user's name, or the caller's own id as
    `vh pipeline list --owned` sends it). vh-orch deletes no pipeline: `deleted=true` lists none."""
    store = store_of(request)
    if project is not None:
        project_ids: list[int] | None = [project_param(request, user, project).id]  # type: ignore[list-item]
    else:
        project_ids = store.visible_project_ids(user)
    statuses = status_filter(status, [s.value for s in PipelineStatus], INCOMPLETE)
    counters = counter_filter(counter)
    if ordering not in ORDERINGS:
        raise field_error("ordering", f"{ordering[:100]!r} is not an ordering: use one of {', '.join(ORDERINGS)}")
    users = [user.name if one == str(user.id) else one for value in creator for one in value.split(",") if one]
    limit, offset = clamp_page(limit, offset)
    if deleted:
        return page_json(request, 0, limit, offset, [])
    rows, total = store.list_pipelines(project_ids=project_ids, statuses=statuses, counters=counters, users=users,
                                       limit=limit, offset=offset, oldest_first=ORDERINGS[ordering])
    names = store.project_names()
    return page_json(request, total, limit, offset,
                     [pipeline_json(request, p, names.get(p.project_id, "?")) for p in rows])


@router.get("/pipelines/{ref}/", name="pipeline")
def pipeline(request: Request, user: CurrentUser, ref: str) -> dict[str, Any]:
    """One pipeline, by id or `{project_id}:{counter}` (or `:latest`), with its nodes (each one's
    status and execution or task) and its edges (between node ids)."""
    return detail_json(request, visible_pipeline(request, user, ref))


@router.post("/pipelines/{ref}/stop/", name="stop_pipeline")
def stop_pipeline(request: Request, user: CurrentUser, ref: str) -> dict[str, Any]:
    """Stop a pipeline: its running executions and tasks stop (outputs kept), what never started
    is skipped, and it ends `stopped` once its work has ended (`stopping` until then)."""
    from vh_orch.orchestrator.pipelines.engine import stop_pipeline as stop
    from vh_orch.orchestrator.wakeup import notify_daemon

    p = visible_pipeline(request, user, ref)
    if not PipelineStatus(p.status).is_final:
        p = stop(store_of(request), settings_of(request), p.id, f"stopped by {user.name}")  # type: ignore[arg-type]
        notify_daemon(settings_of(request))
    return {"id": p.id, "counter": p.counter, "status": p.status, "message": f"pipeline ={p.counter} is {p.status}"}


# `vh pipeline stop` posts to `{url}/stop/`, and `url` ends in a slash: the path has two.
router.add_api_route("/pipelines/{ref}//stop/", stop_pipeline, methods=["POST"], include_in_schema=False)


# -- shapes --------------------------------------------------------------------------------------

def pipeline_json(request: Request, p: Pipeline, project_name: str) -> dict[str, Any]:
    """A pipeline as lists show it (detail_json adds its nodes, edges and log)."""
    here = f"{api_base(request)}/pipelines/{p.id}/"
    return {
        "id": p.id,
        "counter": p.counter,
        "url": here,
        "status": p.status,
        "status_reason": p.status_reason,
        "title": p.title or p.name or f"pipeline ={p.counter}",
        "name": p.name,
        "project": {"id": project_public_id(p.project_id), "name": project_name},
        "creator": {"username": p.user},
        "parameters": p.spec.get("parameters", {}),
        "reuse_executions": bool(p.spec.get("reuse_executions")),
        "ctime": iso(p.created_at),
        "started_at": iso(p.started_at),
        "ended_at": iso(p.ended_at),
        "deleted": False,
        "urls": {"display": pipeline_page(request, p.id), "stop": f"{here}stop/"},
    }


def detail_json(request: Request, p: Pipeline) -> dict[str, Any]:
    from vh_orch.orchestrator.pipelines.summary import node_dict, pipeline_cost

    store = store_of(request)
    nodes = store.pipeline_nodes(p.id)  # type: ignore[arg-type]
    ids = {n.name: n.id for n in nodes}
    commit = store.get_commit(p.commit_id)
    out = pipeline_json(request, p, store.get_project_by_id(p.project_id).name)
    out["commit"] = {"identifier": commit_identifier(commit), "adhoc": commit.kind == "adhoc"}
    out["nodes"] = [_node_json(request, p, n, node_dict(store, n)) for n in nodes]
    out["cost_usd"] = pipeline_cost(store, nodes)
    out["edges"] = [{"id": index, "pipeline": p.id, **edge, "source_node": ids.get(edge["source_node"]),
                     "target_node": ids.get(edge["target_node"]), "source_node_name": edge["source_node"],
                     "target_node_name": edge["target_node"]}
                    for index, edge in enumerate(p.spec.get("edges", []))]
    out["log"] = _log([(p.created_at, "created", "Pipeline created"), (p.started_at, "started", "Pipeline started"),
                       (p.ended_at, p.status, f"Pipeline {p.status}")])
    return out


def _node_json(request: Request, p: Pipeline, node: PipelineNode, summary: dict[str, Any]) -> dict[str, Any]:
    store = store_of(request)
    execution_id = node.execution_id or node.reused_execution_id
    execution = _small(request, store.get_execution(execution_id)) if execution_id else None
    task = _small(request, store.get_task(node.task_id)) if node.task_id else None
    made = f"Created execution #{execution['counter']}" if execution and node.execution_id else (
        f"Reused execution #{execution['counter']}" if execution else None)
    if task is not None:
        made = f"Created task !{task['counter']}"
    return {**summary, "pipeline": p.id, "execution": execution, "task": task,
            "log": _log([(node.started_at, "node_started", made or f"Node {node.name!r} started"),
                         (node.ended_at, node.status, f"Node {node.name!r} {node.status}")])}


def _small(request: Request, row: Execution | Task) -> dict[str, Any]:
    kind = "executions" if isinstance(row, Execution) else "tasks"
    return {"id": row.id, "counter": row.counter, "status": row.status,
            "url": f"{api_base(request)}/{kind}/{row.id}/", "urls": {"display": f"{site(request)}/{kind}/{row.id}/"}}


def _log(entries: list[tuple[Any, str, str]]) -> list[dict[str, Any]]:
    """Valohai's `log`: what happened, newest first."""
    return [{"ctime": iso(when), "identifier": identifier, "kind": "other", "message": message}
            for when, identifier, message in reversed(entries) if when is not None]
