"""`vh-orch budget ...`: spending limits per user or project (services/budgets.py says what they do)."""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import open_store, print_json, print_table

app = typer.Typer(help="Budgets: once a user or project has spent theirs in the period, their new work waits.",
                  no_args_is_help=True)

UserOption = Annotated[str | None, typer.Option("--user", help="A user's budget (their executions in every project)")]
ProjectOption = Annotated[str | None, typer.Option("--project", help="A project's budget (everyone's executions in it)")]


@app.command("set")
def set_(
    usd: Annotated[float, typer.Option("--usd", help="The limit in US dollars per period")],
    user: UserOption = None,
    project: ProjectOption = None,
    period: Annotated[str, typer.Option("--period", help="month, week (from Monday) or day, in UTC")] = "month",
    hard: Annotated[bool, typer.Option(
        "--hard", help="Also stop running executions once it is spent (outputs kept); default: they go on")] = False,
) -> None:
    """Set or change a budget. Once the spend in the period reaches it, new executions of that user or
    project (task and pipeline children too) wait as `created`, saying why; raising it lets them go."""
    from vh_orch.services.budgets import set_budget

    created = set_budget(open_store(), user, project, usd, period, hard)
    who = f"user {user}" if user is not None else f"project {project}"
    print(f"budget {'set' if created else 'updated'}: {who}, ${usd:,.2f} a {period}{' (hard)' if hard else ''}")


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every budget with what was spent in its current period."""
    from vh_orch.services.budgets import list_budgets

    shown = list_budgets(open_store())
    if json_out:
        print_json([b.as_dict() for b in shown])
        return
    print_table("budgets", ["scope", "name", "budget (USD)", "period", "spent (USD)", "hard"],
                [[b.scope, b.name, f"{b.usd:,.2f}", b.period, f"{b.spent_usd:,.2f}", "yes" if b.hard else ""]
                 for b in shown])


@app.command("rm")
def rm(user: UserOption = None, project: ProjectOption = None) -> None:
    """Remove a budget: the work it held goes on in the next pass."""
    from vh_orch.services.budgets import remove_budget

    remove_budget(open_store(), user, project)
    print(f"budget removed: {'user ' + user if user is not None else 'project ' + str(project)}")
