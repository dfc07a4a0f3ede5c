"""Outputs (data) and environments."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import (
    ROW_REF,
    Count,
    checked_ref,
    clamp_page,
    field_error,
    not_found,
    page_json,
    project_param,
    store_of,
    visible_execution,
)
from vh_orch.api.shapes import output_json
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.errors import NotFound, VhOrchError
from vh_orch.orchestrator.models import Output, User
from vh_orch.services.views import status_rows
from vh_orch.storage.datastore import file_uri_path
from vh_orch.storage.datastores import bucket_datastore

router = APIRouter(prefix="/api/v0")
SIGNED_URL_S = 3600


@router.get("/data/")
def data(request: Request, user: CurrentUser, output_execution: str | None = None, project: str | None = None,
         limit: Count = None, offset: Count = None) -> dict[str, Any]:
    """Outputs of one execution (`output_execution=ID`) or of a project's executions (`project=ID`)."""
    store = store_of(request)
    if output_execution is not None:
        checked_ref("output_execution", output_execution, ROW_REF, "an execution id or PROJECT:COUNTER")
        execution_ids = [visible_execution(request, user, output_execution).id]
    elif project is not None:
        p = project_param(request, user, project)
        execution_ids = [e.id for e in store.list_executions(project_id=p.id)]
    else:
        raise field_error("output_execution", "give output_execution=ID or project=ID", code="required")
    limit, offset = clamp_page(limit, offset, default=5000)
    total, rows = store.outputs_page(execution_ids, limit, offset)  # type: ignore[arg-type]
    return page_json(request, total, limit, offset, [output_json(request, o) for o in rows])


@router.get("/data/{datum_id}/download/", name="download_datum", response_model=None)
def download(request: Request, user: CurrentUser, datum_id: str) -> FileResponse | dict[str, str]:
    """The file itself (`Content-Disposition: attachment`) from a folder datastore; a signed URL
    (`{"url": ...}`, valid an hour) from S3 or GCS."""
    output = visible_output(request, user, datum_id)
    scheme = urlparse(output.uri).scheme
    if scheme == "file":
        path = file_uri_path(output.uri)
        if not path.is_file():
            raise HTTPException(410, {"message": f"the stored file of datum {datum_id} is gone", "code": "gone"})
        return FileResponse(path, filename=output.name.rsplit("/", 1)[-1], media_type="application/octet-stream",
                            content_disposition_type="attachment")
    store = store_of(request)
    env = store.get_environment_by_id(store.get_execution(output.execution_id).environment_id)
    try:
        datastore = bucket_datastore(output.uri, settings_of(env).datastore)
        return {"url": datastore.presigned_get(output.uri, SIGNED_URL_S)}  # type: ignore[attr-defined]
    except VhOrchError as exc:
        raise HTTPException(502, {"message": f"cannot sign a download of datum {datum_id}: {exc}",
                                  "code": "datastore"}) from None


def visible_output(request: Request, user: User, datum_id: str) -> Output:
    store = store_of(request)
    try:
        output = store.get_output(datum_id)
    except NotFound:
        raise not_found() from None
    if not store.can_see(user, store.get_execution(output.execution_id).project_id):
        raise not_found()
    return output


@router.get("/environments/")
def environments(request: Request, user: CurrentUser, limit: Count = None, offset: Count = None) -> dict[str, Any]:
    """Every environment (visible to all users), with its price and how many jobs wait or run on it."""
    store = store_of(request)
    rows = status_rows(store)
    envs = {e.name: e for e in store.list_environments()}
    results = []
    for row in rows:
        env = envs[row["environment"]]
        kind = env.instance_type or env.cloud
        results.append({
            "id": env.id,
            "name": env.name,
            "slug": env.name,
            "description": f"{env.cloud}: {kind}" + (f" in {env.region}" if env.region else "")
                           + (" (spot)" if env.spot else ""),
            "per_hour_price_usd": env.price_per_hour,
            "unfinished_job_count": row["queued"] + row["held_by_quota"] + row["running"],
            "per_user_queue_quota": 0,
            "gpu_spec": settings_of(env).gpu,
            "min_scale": env.min_scale,
            "max_scale": env.max_scale,
        })
    limit, offset = clamp_page(limit, offset)
    return page_json(request, len(results), limit, offset, results[offset:offset + limit])


@router.get("/status/")
def status(request: Request, user: CurrentUser) -> list[dict[str, Any]]:
    """What `vh-orch status --json` shows: per environment its machines by state, queue, running
    executions, cost per hour and last launch failure."""
    return status_rows(store_of(request))
