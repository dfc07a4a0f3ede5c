"""Webhooks and their deliveries: a delivery row is written in the same transaction that ends an
execution, task or pipeline (so an end is never recorded without its deliveries, nor the other way
round), and the sender (orchestrator/webhooks.py) claims due rows, tries them and records each try."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_
from sqlmodel import Session, col, select

from vh_orch.errors import NotFound
from vh_orch.orchestrator.costs import PERIOD_WORDS
from vh_orch.orchestrator.models import Execution, Pipeline, Project, Task, Webhook, WebhookDelivery
from vh_orch.orchestrator.store.database import ROWS, Database, table_of
from vh_orch.timeutil import iso

EVENTS = ("execution.ended", "task.ended", "pipeline.ended", "budget.warning")
MAX_TRIES_KEPT = 20  # a delivery's tries list stays small whatever the schedule


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery the sender may try now, with what sending it needs (values, not rows)."""

    id: int
    webhook_id: int
    event: str
    event_id: str
    body: str
    attempts: int
    url: str  # sealed: `SHOWN TOKEN` (webhook_urls.py); the sender opens it
    secret: str | None  # still encrypted
    format: str
    restricted: bool


class WebhooksStore(Database):
    # Where the web pages are: the start of every `url` in a delivery's body ("" gives paths). The
    # daemon sets it from VH_ORCH_PUBLIC_URL or the address its HTTP API listens on.
    public_url: str = ""

    # -- the operator's and owner's side -------------------------------------------------

    def add_webhook(self, webhook: Webhook) -> Webhook:
        with self.write() as s:
            webhook.created_at = self.clock()
            s.add(webhook)
            s.flush()
            return webhook

    def list_webhooks(self, project_ids: Sequence[int] | None = None) -> list[Webhook]:
        with self.read() as s:
            query = select(Webhook).order_by(col(Webhook.id))
            if project_ids is not None:
                query = query.where(col(Webhook.project_id).in_(list(project_ids)))
            return list(s.exec(query))

    def get_webhook(self, webhook_id: int) -> Webhook:
        with self.read() as s:
            webhook = s.get(Webhook, webhook_id)
        if webhook is None:
            raise NotFound(f"no webhook {webhook_id}; see `vh-orch webhook list`")
        return webhook

    def remove_webhook(self, webhook_id: int) -> None:
        """The webhook and its deliveries (a pending one is never sent)."""
        with self.write() as s:
            if s.get(Webhook, webhook_id) is None:
                raise NotFound(f"no webhook {webhook_id}; see `vh-orch webhook list`")
            s.execute(delete(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == webhook_id))
            s.execute(delete(Webhook).where(col(Webhook.id) == webhook_id))

    def webhook_deliveries(self, webhook_id: int, limit: int = 100) -> list[WebhookDelivery]:
        """The newest deliveries first."""
        with self.read() as s:
            return list(s.exec(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                               .order_by(col(WebhookDelivery.id).desc()).limit(limit)))

    # -- the sender's side -----------------------------------------------------------------

    def claim_due_deliveries(self, limit: int, hold_s: float) -> list[Due]:
        """Pending deliveries whose time has come, oldest first, each held for `hold_s` (its
        next_attempt_at moved on) so that no other pass or replica tries it while it is in flight; a
        sender that dies mid-try leaves it to be tried again once the hold has passed."""
        now = self.clock()
        due_now = (WebhookDelivery.status == "pending",
                   or_(col(WebhookDelivery.next_attempt_at).is_(None), col(WebhookDelivery.next_attempt_at) <= now))
        with self.read() as s:  # most looks find nothing: no write lock for them
            if s.exec(select(WebhookDelivery.id).where(*due_now).limit(1)).first() is None:
                return []
        with self.write() as s:
            rows = s.exec(select(WebhookDelivery, Webhook).join(Webhook, col(Webhook.id) == WebhookDelivery.webhook_id)
                          .where(*due_now)
                          .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
                          .limit(limit)).all()
            due = []
            for delivery, webhook in rows:
                delivery.next_attempt_at = now + timedelta(seconds=hold_s)
                s.add(delivery)
                due.append(Due(id=delivery.id, webhook_id=webhook.id, event=delivery.event,  # type: ignore[arg-type]
                               event_id=delivery.event_id, body=delivery.body, attempts=delivery.attempts,
                               url=webhook.url, secret=webhook.secret, format=webhook.format,
                               restricted=webhook.restricted))
            return due

    def record_delivery_try(self, delivery_id: int, started: datetime, status_code: int | None, error: str | None,
                            next_at: datetime | None) -> None:
        """One try's outcome: delivered (a 2xx), pending until next_at, or failed (no next_at: out of tries)."""
        now = self.clock()
        with self.write(ROWS) as s:
            delivery = s.get(WebhookDelivery, delivery_id)
            if delivery is None:  # its webhook was removed while the try was in flight
                return
            delivered = status_code is not None and 200 <= status_code < 300
            delivery.attempts += 1
            delivery.last_status_code = status_code
            delivery.last_error = error
            delivery.tries = [*delivery.tries, {"at": iso(started), "status_code": status_code, "error": error,
                                                "seconds": round((now - started).total_seconds(), 3)}
                              ][-MAX_TRIES_KEPT:]
            if delivered:
                delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", now, None
            elif next_at is None:
                delivery.status, delivery.next_attempt_at = "failed", None
            else:
                delivery.next_attempt_at = next_at
            s.add(delivery)

    # -- events, inside the transaction that ends the work -------------------------------------

    def _execution_ended(self, s: Session, execution: Execution) -> None:
        self._queue_event(s, execution.project_id, "execution.ended", "execution", lambda project: {
            "id": execution.id, "counter": execution.counter, "project": project.name,
            "step": execution.step, "status": execution.status, "status_reason": execution.status_reason,
            "url": f"{self.public_url}/executions/{execution.id}/", "user": execution.user,
            "task": execution.task_id, "created_at": _iso(execution.created_at),
            "started_at": _iso(execution.started_at), "ended_at": _iso(execution.ended_at),
        })

    def _task_ended(self, s: Session, task: Task) -> None:
        self._queue_event(s, task.project_id, "task.ended", "task", lambda project: {
            "id": task.id, "counter": task.counter, "project": project.name, "step": task.step,
            "name": task.name, "status": task.status, "status_reason": task.status_reason,
            "url": f"{self.public_url}/tasks/{task.id}/", "user": task.user,
            "created_at": _iso(task.created_at), "started_at": _iso(task.started_at), "ended_at": _iso(task.ended_at),
        })

    def _pipeline_ended(self, s: Session, pipeline: Pipeline) -> None:
        self._queue_event(s, pipeline.project_id, "pipeline.ended", "pipeline", lambda project: {
            "id": pipeline.id, "counter": pipeline.counter, "project": project.name, "name": pipeline.name,
            "status": pipeline.status, "status_reason": pipeline.status_reason,
            "url": f"{self.public_url}/pipelines/{pipeline.id}/", "user": pipeline.user,
            "created_at": _iso(pipeline.created_at), "started_at": _iso(pipeline.started_at),
            "ended_at": _iso(pipeline.ended_at),
        })

    def _queue_event(self, s: Session, project_id: int, event: str, kind: str, describe: Any) -> None:
        """A pending delivery for every webhook of the project that wants this event; the body is made
        once, so every try sends the same bytes under the same event id."""
        table = table_of(Webhook)
        hooks = [w for w in s.connection().execute(select(table.c.id, table.c.events, table.c.format)
                                                   .where(table.c.project_id == project_id)) if event in w.events]
        if not hooks:
            return
        project = s.get_one(Project, project_id)
        payload = {"event": event, kind: describe(project)}
        event_id = str(uuid.uuid4())
        now = self.clock()
        for hook in hooks:
            s.add(WebhookDelivery(webhook_id=hook.id, event=event, event_id=event_id,  # type: ignore[arg-type]
                                  body=_body(payload, hook.format), next_attempt_at=now, created_at=now))


def _iso(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None


def _body(payload: dict[str, Any], fmt: str) -> str:
    if fmt == "slack":
        return json.dumps({"text": slack_text(payload)})
    return json.dumps(payload, separators=(",", ":"))


def slack_text(payload: dict[str, Any]) -> str:
    """One line for a chat channel: what ended, how, and a link (Slack's `<url|label>`)."""
    event = payload["event"]
    if event == "budget.warning":
        b = payload["budget"]
        return _slack_escaped(f"{b['scope']} {b['name']} has spent ${b['spent_usd']:,.2f} of the ${b['usd']:,.2f} "
                              f"{PERIOD_WORDS.get(b['period'], b['period'])} budget ({b['percent']:.0f} %)")
    kind = event.split(".", 1)[0]
    item = payload[kind]
    label = _slack_escaped(f"{item['project']} {kind} #{item['counter']}")
    what = _slack_escaped(item.get("step") or item.get("name") or "")
    reason = f": {_slack_escaped(item['status_reason'])}" if item.get("status_reason") else ""
    link = f"<{_slack_escaped(item['url'])}|{label}>" if item["url"].startswith("http") else label
    return f"{link}{f' ({what})' if what else ''} ended {item['status']}{reason}"


def _slack_escaped(text: str) -> str:
    """Slack reads `<...>` as links and mentions: a step name or a reason (anyone's text) stays text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
