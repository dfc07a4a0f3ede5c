"""Webhooks: the one way to add, list and remove them and read their deliveries (`vh-orch webhook ...` and
the project's API routes both come here), and the shapes both faces show.

The signing secret is encrypted with the installation's key before it is stored and never shown again
(the views say only whether there is one); so is the URL, which can itself be a credential: the views
show `scheme://host/…(its last 4 characters)` (orchestrator/webhook_urls.py). A webhook made through
the API is restricted: its URL must pass the fetch policy (no address of the daemon's own networks
unless the operator allows it), checked here and again on every connection; the operator's CLI may
point one anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vh_orch.errors import UserInputError, about
from vh_orch.orchestrator.store.webhooks import EVENTS
from vh_orch.orchestrator.webhook_urls import seal_url, stored_shown
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Project, Webhook, WebhookDelivery
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings

FORMATS = ("json", "slack")
MAX_URL_CHARS = 2000
MAX_SECRET_BYTES = 4096


@dataclass(frozen=True)
class WebhookRequest:
    """What a caller asks for; checked by add_webhook."""

    url: str
    events: tuple[str, ...]
    secret: str | None = None
    format: str = "json"


@dataclass(frozen=True)
class WebhookView:
    id: int
    project: str
    url: str
    events: tuple[str, ...]
    format: str
    has_secret: bool
    restricted: bool
    created_by: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "project": self.project, "url": self.url, "events": list(self.events),
                "format": self.format, "has_secret": self.has_secret, "restricted": self.restricted,
                "created_by": self.created_by, "created_at": iso(self.created_at)}


@dataclass(frozen=True)
class DeliveryView:
    id: int
    webhook: int
    event: str
    event_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    tries: tuple[dict[str, Any], ...]
    created_at: datetime
    delivered_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "webhook": self.webhook, "event": self.event, "event_id": self.event_id,
                "status": self.status, "attempts": self.attempts,
                "next_attempt_at": _iso(self.next_attempt_at if self.status == "pending" else None),
                "last_status_code": self.last_status_code, "last_error": self.last_error,
                "tries": list(self.tries), "created_at": iso(self.created_at),
                "delivered_at": _iso(self.delivered_at)}


def parse_events(text: str | Sequence[str]) -> tuple[str, ...]:
    """Comma-separated (or listed) event names, each one of EVENTS; UserInputError naming `events`."""
    parts = text.split(",") if isinstance(text, str) else [p for one in text for p in str(one).split(",")]
    events = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        shown = repr(unknown[0][:100]) if unknown else "no event"
        raise UserInputError(f"{shown} is not an event a webhook can ask for: give one or more of "
                             f"{', '.join(EVENTS)}, comma-separated", field="events")
    return events


def check_url(url: str, restricted: bool, settings: Settings) -> str:
    """An http(s) URL without credentials in it; restricted: one the fetch policy lets the daemon reach."""
    with about("url"):
        if len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
            raise UserInputError("the URL is not a URL (too long, or spaces or control characters in it)")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (a malformed port raises here)
        except ValueError:
            raise UserInputError(f"{url[:100]!r} is not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserInputError(f"{url[:100]!r} is not an http:// or https:// URL")
        if parts.username or parts.password:
            raise UserInputError("the URL holds a user name or password: give the receiver a secret instead "
                                 "(deliveries are signed with it)")
        if restricted:
            from vh_orch.storage.fetch_policy import FetchPolicy, parse_networks

            why = FetchPolicy(parse_networks(settings.allow_fetch)).url_refusal(url)
            if why is not None:
                raise UserInputError(f"webhooks made through the API never reach the daemon's own networks: {why} "
                                     "(an operator can allow a network with `vh-orch serve --allow-fetch CIDR`, or "
                                     "add the webhook with `vh-orch webhook add`)")
    return url


def add_webhook(store: Store, settings: Settings, project: Project, request: WebhookRequest, *,
                restricted: bool, created_by: str | None) -> WebhookView:
    """A new webhook for the project; UserInputError naming url, events, format or secret."""
    from vh_orch.keyring import KeyRing
    from vh_orch.orchestrator.models import Webhook

    url = check_url(request.url.strip(), restricted, settings)
    events = parse_events(request.events)
    if request.format not in FORMATS:
        raise UserInputError(f"format {request.format[:50]!r}: give json or slack", field="format")
    if request.secret and len(request.secret.encode()) > MAX_SECRET_BYTES:
        raise UserInputError(f"the secret is longer than {MAX_SECRET_BYTES} bytes", field="secret")
    ring = KeyRing.load(settings.home)
    secret = ring.encrypt(request.secret) if request.secret else None
    sealed = seal_url(url, ring.encrypt)
    webhook = store.add_webhook(Webhook(project_id=project.id, url=sealed, events=list(events),  # type: ignore[arg-type]
                                        secret=secret, format=request.format, restricted=restricted,
                                        created_by=created_by))
    return webhook_view(webhook, project.name)


def webhook_view(webhook: Webhook, project_name: str) -> WebhookView:
    assert webhook.id is not None
    return WebhookView(id=webhook.id, project=project_name, url=stored_shown(webhook.url),
                       events=tuple(webhook.events), format=webhook.format, has_secret=webhook.secret is not None,
                       restricted=webhook.restricted, created_by=webhook.created_by, created_at=webhook.created_at)


def list_webhooks(store: Store, project_ids: Sequence[int] | None = None) -> list[WebhookView]:
    names = store.project_names()
    return [webhook_view(w, names.get(w.project_id, "?")) for w in store.list_webhooks(project_ids)]


def delivery_view(d: WebhookDelivery) -> DeliveryView:
    return DeliveryView(id=d.id, webhook=d.webhook_id, event=d.event, event_id=d.event_id,  # type: ignore[arg-type]
                        status=d.status, attempts=d.attempts, next_attempt_at=d.next_attempt_at,
                        last_status_code=d.last_status_code, last_error=d.last_error, tries=tuple(d.tries),
                        created_at=d.created_at, delivered_at=d.delivered_at)


def deliveries(store: Store, webhook_id: int, limit: int = 100) -> list[DeliveryView]:
    return [delivery_view(d) for d in store.webhook_deliveries(webhook_id, limit)]


def _iso(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None
