"""`vh-orch webhook ...`: POSTs to another system when a project's executions, tasks or pipelines end.

The operator's CLI may point a webhook anywhere (a chat server on the office network, a CI job on
localhost); the project's owner adds them through the API and the web page, where the fetch policy
applies. The signing secret is read from standard input (`--secret-stdin`), never from an argument
(it would show in `ps` and in shell history), stored encrypted and never shown again.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import open_store, print_json, print_table, settings

app = typer.Typer(help="Webhooks: POSTs to another system when executions, tasks or pipelines end.",
                  no_args_is_help=True)

IdArg = Annotated[int, typer.Argument(help="The webhook's id (`vh-orch webhook list`)", min=1)]


@app.command("add")
def add(
    project: Annotated[str, typer.Option("--project", "-p", help="The project whose work it reports")],
    url: Annotated[str, typer.Option("--url", help="Where deliveries are POSTed (http:// or https://)")],
    events: Annotated[str, typer.Option(
        "--events", metavar="EVENT[,EVENT...]",
        help="What it reports: execution.ended, task.ended, pipeline.ended, budget.warning (comma-separated)")
    ] = "execution.ended,task.ended,pipeline.ended,budget.warning",
    secret_stdin: Annotated[bool, typer.Option(
        "--secret-stdin", help="Read the signing secret from standard input (X-Vh-Orch-Signature: sha256=HMAC "
                               "of the body)")] = False,
    fmt: Annotated[str, typer.Option("--format", metavar="json|slack",
                                     help="json: the event as JSON; slack: Slack's incoming-webhook {\"text\": ...}")
                   ] = "json",
    json_out: Annotated[bool, typer.Option("--json", help="Print the webhook as JSON")] = False,
) -> None:
    """Add a webhook to a project."""
    from vh_orch.cli.stdin import read_stdin_value
    from vh_orch.services.webhooks import WebhookRequest, add_webhook

    secret = read_stdin_value("--secret-stdin") if secret_stdin else None
    s = settings()
    store = open_store(s)
    webhook = add_webhook(store, s, store.get_project(project),
                          WebhookRequest(url=url, events=tuple(events.split(",")), secret=secret, format=fmt),
                          restricted=False, created_by=None)
    if json_out:
        print_json(webhook.as_dict())
    else:
        print(f"webhook {webhook.id} added to {project}: {', '.join(webhook.events)} to {webhook.url}"
              + ("" if webhook.has_secret else " (unsigned: give --secret-stdin to sign deliveries)"))


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project's")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List webhooks (never their secrets)."""
    from vh_orch.services.webhooks import list_webhooks

    store = open_store()
    project_ids = None if project is None else [store.get_project(project).id]
    hooks = list_webhooks(store, project_ids)  # type: ignore[arg-type]
    if json_out:
        print_json([w.as_dict() for w in hooks])
        return
    print_table("webhooks", ["id", "project", "url", "events", "format", "signed", "made through"],
                [[w.id, w.project, w.url, ", ".join(w.events), w.format, "yes" if w.has_secret else "no",
                  f"the API by {w.created_by}" if w.restricted else "the CLI"] for w in hooks])


@app.command("rm")
def rm(webhook_id: IdArg) -> None:
    """Remove a webhook and its deliveries (pending ones are never sent)."""
    open_store().remove_webhook(webhook_id)
    print(f"webhook {webhook_id} removed")


@app.command("deliveries")
def deliveries(
    webhook_id: IdArg,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="The newest N")] = 50,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A webhook's deliveries, newest first, with every try."""
    from vh_orch.services import webhooks as service

    store = open_store()
    store.get_webhook(webhook_id)
    found = service.deliveries(store, webhook_id, limit)
    if json_out:
        print_json([d.as_dict() for d in found])
        return
    print_table(f"deliveries of webhook {webhook_id}",
                ["id", "event", "status", "tries", "last answer", "next try", "created"],
                [[d.id, d.event, d.status, d.attempts,
                  d.last_error or (f"HTTP {d.last_status_code}" if d.last_status_code else ""),
                  d.as_dict()["next_attempt_at"] or "", d.as_dict()["created_at"]] for d in found])
