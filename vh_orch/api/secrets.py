"""A project's secrets over HTTP, for its owner (and administrators): names and dates to read, values to
write, never to read back. Anyone else, members included, gets 404, as for a project they cannot see."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import field_error, managed_project, not_found, settings_of, store_of
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.secrets import MAX_VALUE_BYTES
from vh_orch.services import secrets as secrets_service

router = APIRouter(prefix="/api/v0")



class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=MAX_VALUE_BYTES, description="The value; never shown again")


@router.get("/projects/{project_id}/secrets/")
def list_secrets(request: Request, user: CurrentUser, project_id: str) -> dict[str, Any]:
    """The project's secrets: names and dates, never values."""
    project = managed_project(request, user, project_id)
    shown = secrets_service.list_secrets(store_of(request), project.id)  # type: ignore[arg-type]
    return {"count": len(shown), "results": [secret.as_dict() for secret in shown]}


@router.put("/projects/{project_id}/secrets/{name}/")
def put_secret(request: Request, user: CurrentUser, project_id: str, name: str, body: SecretValue,
               response: Response) -> dict[str, Any]:
    """Set a secret (201) or give it a new value (200); the answer names it, never its value."""
    project = managed_project(request, user, project_id)
    try:
        created = secrets_service.set_secret(store_of(request), settings_of(request), project.id,  # type: ignore[arg-type]
                                             name, body.value, by=user.name)
    except UserInputError as exc:
        raise field_error(exc.field or "value", str(exc)) from None
    response.status_code = 201 if created else 200
    return {"name": name, "created": created}


@router.delete("/projects/{project_id}/secrets/{name}/", status_code=204)
def delete_secret(request: Request, user: CurrentUser, project_id: str, name: str) -> Response:
    project = managed_project(request, user, project_id)
    try:
        secrets_service.remove_secret(store_of(request), project.id, name)  # type: ignore[arg-type]
    except NotFound:
        raise not_found() from None
    return Response(status_code=204)
