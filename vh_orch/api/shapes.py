"""The JSON the API answers with, in the shapes (and field names) of Valohai's API, plus vh-orch's own.

Absolute URLs are built from the request (`url_for`), so they carry the caller's own scheme and
host: the `vh` client sends its token only to the host it logged in to.
"""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from fastapi import Request

from vh_orch.api.deps import project_public_id, store_of
from vh_orch.orchestrator.costs import execution_cost
from vh_orch.orchestrator.models import Commit, Execution, Output
from vh_orch.orchestrator.store.logs import Event, EventRow
from vh_orch.services.projects import ProjectView
from vh_orch.timeutil import as_utc, iso, utcnow


def api_base(request: Request) -> str:
    """`{scheme}://{host}/api/v0` of this request, worked out once per request (url_for walks every
    route: it was three quarters of a 100-row list's time)."""
    base = getattr(request.state, "api_base", None)
    if base is None:
        base = request.state.api_base = str(request.base_url).rstrip("/") + "/api/v0"
    return base  # type: ignore[no-any-return]


def site(request: Request) -> str:
    """`{scheme}://{host}`: where the web UI's pages are."""
    return api_base(request).removesuffix("/api/v0")


def pipeline_page(request: Request, pipeline_id: int) -> str:
    """The web page of a pipeline (the API's `urls.display`, what `vh pipeline run` prints)."""
    return f"{site(request)}/pipelines/{pipeline_id}/"


def project_json(request: Request, p: ProjectView, summary: dict[str, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": project_public_id(p.id),
        "name": p.name,
        "description": "",
        "owner": {"username": p.owner},
        "members": [{"username": m} for m in p.members],
        "yaml_path": "valohai.yaml",
        "repository": p.repo_url,
        "ctime": iso(p.created_at),
        "url": f"{api_base(request)}/projects/{p.id}/",
        "urls": {"display": f"{site(request)}/projects/{p.id}/"},
    }
    if summary is not None:
        out["execution_summary"] = {"count": sum(summary.values()),
                                    **{f"{status}_count": n for status, n in summary.items()}}
    return out


def commit_identifier(c: Commit) -> str:
    return f"~{c.identifier}" if c.kind == "adhoc" else c.identifier


def commit_json(request: Request, c: Commit, include_config: bool = False) -> dict[str, Any]:
    ident = commit_identifier(c)
    out: dict[str, Any] = {
        "identifier": ident,
        "ref": c.ref,
        "adhoc": c.kind == "adhoc",
        "commit_time": iso(c.created_at),
        "project": project_public_id(c.project_id),
        "url": f"{api_base(request)}/commits/{ident}/?project={project_public_id(c.project_id)}",
    }
    if include_config:
        out["config"] = c.config_yaml
    return out


def duration_s(e: Execution) -> float | None:
    if e.started_at is None:
        return None
    return round((as_utc(e.ended_at or utcnow()) - as_utc(e.started_at)).total_seconds(), 3)


def execution_json(request: Request, e: Execution, project_name: str, env_name: str,
                   commit: Commit | None, pipeline: tuple[int, int] | None = None) -> dict[str, Any]:
    """One execution: what `vh exec info/list/logs/outputs` read, and what vh-orch's UI needs.
    pipeline: (id, counter) of the pipeline whose node ran it, if one did."""
    here = f"{api_base(request)}/executions/{e.id}/"
    return {
        "id": e.id,
        "counter": e.counter,
        "url": here,
        "status": e.status,
        "status_reason": e.status_reason,
        "step": e.step,
        "title": e.title,
        "duration": duration_s(e),
        "project": {"id": project_public_id(e.project_id), "name": project_name},
        "environment": {"id": e.environment_id, "name": env_name, "slug": env_name},
        "commit": None if commit is None else {"identifier": commit_identifier(commit), "ref": commit.ref,
                                               "adhoc": commit.kind == "adhoc"},
        "image": e.image,
        "parameters": e.parameters,
        "inputs": [{"name": name, "urls": urls} for name, urls in e.inputs.items()],
        "environment_variables": e.environment_variables,
        "command": e.command,
        "time_limit": e.time_limit_s,
        "priority": e.priority,
        "creator": {"username": e.user},
        "attempt": e.attempt,
        "exit_code": e.exit_code,
        "machine": e.machine_id,
        "cost_usd": execution_cost(store_of(request), e),  # its share of its machine's bill (so far, if running)
        "ctime": iso(e.created_at),
        "queued_at": iso(e.queued_at) if e.queued_at else None,
        "started_at": iso(e.started_at) if e.started_at else None,
        "ended_at": iso(e.ended_at) if e.ended_at else None,
        "metadata": e.metadata_latest,
        "task": None if e.task_id is None else {"id": e.task_id, "index": e.task_index,
                                                "url": f"{api_base(request)}/tasks/{e.task_id}/"},
        "pipeline": None if pipeline is None else pipeline[0],
        "pipeline_counter": None if pipeline is None else pipeline[1],
        "pipeline_node": e.pipeline_node_id,
        "urls": {
            "display": f"{site(request)}/executions/{e.id}/",
            "stop": f"{here}stop/",
            "events": f"{here}events/",
            "stream": f"{here}stream/",
            "metadata": f"{here}metadata/",
        },
    }


def event_rows_json(rows: Sequence[EventRow]) -> str:
    """A page of events as the JSON list of event_json's objects, spelt without a dict or a datetime per
    line (a page is thousands of lines; json.dumps's own string encoder)."""
    return "[" + ",".join(f'{{"seq":{seq},"time":"{time}","stream":"{stream}","message":{encode_basestring_ascii(text)}}}'
                          for seq, time, stream, text in rows) + "]"


def event_json(ev: Event) -> dict[str, Any]:
    # `time` has microseconds: the client tells events apart by their stream, time and text.
    return {"seq": ev.seq, "time": iso(ev.time), "stream": ev.stream if ev.kind == "log" else "status",
            "message": ev.text}


def output_json(request: Request, o: Output) -> dict[str, Any]:
    return {
        "id": o.id,
        "name": o.name,
        "size": o.size,
        "checksums": {"sha256": o.sha256},
        "datum_url": f"datum://{o.id}",
        "output_execution": o.execution_id,
        "tags": o.tags or [],
        "ctime": iso(o.created_at),
        "urls": {"download": f"{api_base(request)}/data/{o.id}/download/"},
    }
