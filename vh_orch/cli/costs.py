"""`vh-orch cost report`: who spent what on the billed machines (orchestrator/costs.py says how it is split)."""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import open_store, print_json, print_table

app = typer.Typer(help="What the machines cost, split by user, project, environment, task or pipeline.",
                  no_args_is_help=True)


@app.command("report")
def report(
    by: Annotated[str, typer.Option("--by", help="Split by user, project, environment, task or pipeline")] = "user",
    since: Annotated[str | None, typer.Option(
        "--since", help="From this date or time (UTC unless it says), e.g. 2026-12-01")] = None,
    days: Annotated[float | None, typer.Option("--days", help="The last N days (default: 30)")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Each row: what its executions' share of the machines cost; each environment's idle machine time
    (booting, idle, draining) is a row of its own, so the rows add up to the machines' bill."""
    from vh_orch.services.costs import cost_report, window_start
    from vh_orch.timeutil import utcnow

    now = utcnow()
    start = window_start(since, days, now)
    shown = cost_report(open_store(), by, start, now)
    if json_out:
        print_json([row.as_dict() for row in shown.rows])
        return
    print_table(f"cost by {by}, {start:%Y-%m-%d %H:%M} to {now:%Y-%m-%d %H:%M} UTC",
                [by, "cost (USD)", "machine hours", "executions"],
                [[f"idle ({row.key})" if row.idle else ("(none)" if row.key is None else row.key),
                  f"{row.cost_usd:.2f}", f"{row.machine_hours:.2f}", "" if row.idle else row.executions]
                 for row in shown.rows]
                + [["total", f"{shown.total_usd:.2f}", f"{sum(r.machine_hours for r in shown.rows):.2f}",
                    sum(r.executions for r in shown.rows)]])
