"""A project's webhooks, for its owner (and administrators): list, add, remove, read the deliveries. Anyone
else, a member of the project included, gets 404 whether or not the webhook exists: a webhook's URL can
itself be a credential (Slack's are). Secrets are write-only. A webhook added here by someone who is not
an administrator is restricted: its URL must pass the fetch policy (services/webhooks.check_url)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import Count, field_error, managed_project, not_found, parse_id, settings_of, store_of
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import User, Webhook
from vh_orch.services import webhooks as service

router = APIRouter(prefix="/api/v0")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=service.MAX_URL_CHARS)
    events: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=10)] | Annotated[
        str, Field(max_length=1000)] = ["execution.ended", "task.ended", "pipeline.ended"]
    secret: str | None = Field(default=None, max_length=service.MAX_SECRET_BYTES)
    format: str = Field(default="json", max_length=20)



def owned_webhook(request: Request, user: User, webhook_id: str) -> Webhook:
    store = store_of(request)
    try:
        webhook = store.get_webhook(parse_id(webhook_id))
    except NotFound:
        raise not_found() from None
    managed_project(request, user, str(webhook.project_id))
    return webhook


@router.get("/projects/{project_id}/webhooks/")
def list_webhooks(request: Request, user: CurrentUser, project_id: str) -> dict[str, Any]:
    """The project's webhooks (never their secrets)."""
    project = managed_project(request, user, project_id)
    hooks = service.list_webhooks(store_of(request), [project.id])  # type: ignore[list-item]
    return {"count": len(hooks), "results": [w.as_dict() for w in hooks]}


@router.post("/projects/{project_id}/webhooks/", status_code=201)
def add_webhook(request: Request, user: CurrentUser, project_id: str, body: WebhookCreate) -> dict[str, Any]:
    """Add a webhook: `url`, `events` (a list, or comma-separated), `secret` (optional, never returned),
    `format` (json or slack)."""
    project = managed_project(request, user, project_id)
    events = tuple([body.events] if isinstance(body.events, str) else body.events)
    try:
        made = service.add_webhook(store_of(request), settings_of(request), project,
                                   service.WebhookRequest(url=body.url, events=events, secret=body.secret or None,
                                                          format=body.format),
                                   restricted=not user.is_admin, created_by=user.name)
    except UserInputError as exc:
        raise field_error(exc.field or "url", str(exc)) from None
    return made.as_dict()


@router.delete("/webhooks/{webhook_id}/")
def remove_webhook(request: Request, user: CurrentUser, webhook_id: str) -> dict[str, Any]:
    """Remove a webhook and its deliveries."""
    webhook = owned_webhook(request, user, webhook_id)
    store_of(request).remove_webhook(webhook.id)  # type: ignore[arg-type]
    return {"id": webhook.id, "removed": True}


@router.get("/webhooks/{webhook_id}/deliveries/")
def webhook_deliveries(request: Request, user: CurrentUser, webhook_id: str, limit: Count = None) -> dict[str, Any]:
    """The webhook's newest deliveries (default 50), each with every try."""
    webhook = owned_webhook(request, user, webhook_id)
    found = service.deliveries(store_of(request), webhook.id, min(limit or 50, 1000))  # type: ignore[arg-type]
    return {"count": len(found), "results": [d.as_dict() for d in found]}
