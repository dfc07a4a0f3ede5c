"""`vh-orch pipeline ...`: run a valohai.yaml pipeline (a DAG of executions and tasks), follow,
stop and approve it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vh_orch.cli.common import open_store, print_fields, print_json, print_table, settings
from vh_orch.cli.options import AdhocOption, CommitOption, ProjectOption
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Pipeline

app = typer.Typer(help="Pipelines: valohai.yaml DAGs of executions and tasks.", no_args_is_help=True)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Pipeline name from valohai.yaml (`- pipeline:`)")],
    project: ProjectOption,
    commit: CommitOption = None,
    adhoc: AdhocOption = None,
    param: Annotated[list[str] | None, typer.Option(
        "-p", "--param", help="PIPELINE_PARAMETER=VALUE (repeat a name for a list)")] = None,
    title: Annotated[str | None, typer.Option("--title")] = None,
    environment: Annotated[str | None, typer.Option(
        "--environment", "--env", help="Environment of every node that names none (default: local)")] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print {\"id\": ...} of the new pipeline")] = False,
) -> None:
    """Start the valohai.yaml pipeline NAME: its first nodes are queued at once, the rest as their
    upstream nodes complete."""
    from vh_orch.cli.common import note
    from vh_orch.config.steps import parse_assignments
    from vh_orch.orchestrator.pipelines.create import PipelineRequest
    from vh_orch.orchestrator.pipelines.engine import start_pipeline
    from vh_orch.orchestrator.submit import SubmitRequest
    from vh_orch.orchestrator.wakeup import notify_daemon

    s = settings()
    store = open_store(s)
    given = parse_assignments(param or [], "pipeline parameter")
    values: dict[str, Any] = {k: v[0] if len(v) == 1 else v for k, v in given.items()}
    pipeline = start_pipeline(store, s, PipelineRequest(
        run=SubmitRequest(project=project, step="", commit=commit, adhoc=Path(adhoc) if adhoc is not None else None,
                          environment=environment, priority=priority),
        name=name, parameters=values, title=title,
    ))
    notify_daemon(s)
    if json_out:
        print_json({"id": pipeline.id, "counter": pipeline.counter, "status": pipeline.status})
    else:
        nodes = store.pipeline_nodes(pipeline.id)  # type: ignore[arg-type]
        note(f"pipeline {pipeline.id} (!{pipeline.counter} in {project}) {pipeline.status}: {len(nodes)} nodes")


def pipeline_row(pipeline: Pipeline, names: dict[int, str]) -> dict[str, Any]:
    return {"id": pipeline.id, "counter": pipeline.counter, "project": names.get(pipeline.project_id),
            "name": pipeline.name, "title": pipeline.title, "status": pipeline.status,
            "status_reason": pipeline.status_reason, "created_at": iso(pipeline.created_at),
            "started_at": iso(pipeline.started_at), "ended_at": iso(pipeline.ended_at)}


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project")] = None,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List pipelines, newest first."""
    store = open_store()
    project_ids = [store.get_project(project).id] if project else None  # type: ignore[list-item]
    pipelines, _ = store.list_pipelines(project_ids=project_ids, limit=limit)
    names = store.project_names()
    if json_out:
        print_json([pipeline_row(p, names) for p in pipelines])
        return
    rows = [[p.id, names.get(p.project_id), p.counter, p.title or p.name or "", p.status, iso(p.created_at)]
            for p in pipelines]
    print_table(None, ["id", "project", "!", "title", "status", "created"], rows)


@app.command("info")
def info(
    pipeline_id: Annotated[int, typer.Argument(metavar="ID")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A pipeline: its status and each node's status, executions and reason."""
    from vh_orch.orchestrator.pipelines.summary import pipeline_dict

    store = open_store()
    data = pipeline_dict(store, store.get_pipeline(pipeline_id))
    if json_out:
        print_json(data)
        return
    print_fields(f"pipeline {data['id']} (!{data['counter']} in {data['project']})", {
        "title": data["title"] or data["name"] or "-",
        "status": data["status"] + (f" ({data['status_reason']})" if data["status_reason"] else ""),
        "commit": data["commit"],
    })
    rows = [[n["name"], n["type"], n["status"], " ".join(str(e) for e in n["executions"]) or "-",
             n["status_reason"] or ""] for n in data["nodes"]]
    print_table(None, ["node", "type", "status", "executions", "reason"], rows)


@app.command("wait")
def wait(
    pipeline_id: Annotated[int, typer.Argument(metavar="ID")],
    timeout: Annotated[float | None, typer.Option("--timeout", help="Give up after this many seconds")] = None,
) -> None:
    """Wait until a pipeline ends; exit status 0 only when it ends `complete` (2: still running at --timeout)."""
    from vh_orch.cli.executions import wait_until_final
    from vh_orch.values import FINAL_PIPELINE_STATUSES, PipelineStatus

    s = settings()
    store = open_store(s)
    wait_until_final(store, s, f"pipeline {pipeline_id}", lambda: store.get_pipeline(pipeline_id),
                     FINAL_PIPELINE_STATUSES, PipelineStatus.COMPLETE, timeout)


@app.command("stop")
def stop(pipeline_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop a pipeline: running executions and tasks stop gracefully, nodes not started are skipped."""
    from vh_orch.cli.common import note
    from vh_orch.orchestrator.pipelines.engine import stop_pipeline
    from vh_orch.orchestrator.wakeup import notify_daemon

    s = settings()
    store = open_store(s)
    store.get_pipeline(pipeline_id)
    pipeline = stop_pipeline(store, s, pipeline_id)
    notify_daemon(s)
    note(f"pipeline {pipeline_id}: {pipeline.status}")


@app.command("approve")
def approve(
    pipeline_id: Annotated[int, typer.Argument(metavar="ID")],
    node: Annotated[str, typer.Argument(metavar="NODE", help="The node waiting for approval")],
) -> None:
    """Let a node held by a `require-approval` action start."""
    from vh_orch.cli.common import note
    from vh_orch.orchestrator.pipelines.engine import approve as approve_node
    from vh_orch.orchestrator.submit import current_user
    from vh_orch.orchestrator.wakeup import notify_daemon

    s = settings()
    store = open_store(s)
    approve_node(store, s, pipeline_id, node, current_user())
    notify_daemon(s)
    note(f"pipeline {pipeline_id}: node {node!r} approved")
