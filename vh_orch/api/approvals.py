"""Approving a pipeline node held by a `require-approval` action (the web UI's Approve button; the CLI's
`vh-orch pipeline approve ID NODE`). Another user's pipeline answers 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import field_error, settings_of, store_of, visible_pipeline
from vh_orch.errors import UserInputError

router = APIRouter(prefix="/api/v0")
MAX_NODE_NAME = 1000


@router.post("/pipelines/{ref}/nodes/{name}/approve/", name="approve_pipeline_node")
def approve_node(request: Request, user: CurrentUser, ref: str, name: str) -> dict[str, Any]:
    """Let the node start: valid only while it is `waiting-approval` and its pipeline runs."""
    from vh_orch.orchestrator.pipelines.engine import approve
    from vh_orch.orchestrator.wakeup import notify_daemon

    pipeline = visible_pipeline(request, user, ref)
    if len(name) > MAX_NODE_NAME:
        raise field_error("node", f"a node name is at most {MAX_NODE_NAME} characters")
    try:
        node = approve(store_of(request), settings_of(request), pipeline.id, name, user.name)  # type: ignore[arg-type]
    except UserInputError as exc:
        raise field_error(exc.field or "node", str(exc)) from None
    notify_daemon(settings_of(request))
    return {"pipeline": pipeline.id, "node": node.name, "status": node.status, "approved_by": node.approved_by}
