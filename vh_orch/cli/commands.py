"""The Typer app: every command under its name.

Command modules import only Typer at load time and what a command uses inside it, so
`--help` and a command's start do not pay for the daemon, the clouds or SQLAlchemy.
"""

from __future__ import annotations

import typer

from vh_orch.cli import (
    daemon_cmds, datasets, environments, executions, operations, pipelines, projects, simulate, tasks, users,
    webhooks,
)
from vh_orch.cli import registries, secrets  # noqa: I001 (its own line: issue 30's parts merge cleanly)
from vh_orch.cli import keys  # noqa: I001
from vh_orch.cli import budgets, costs  # noqa: I001

app = typer.Typer(
    name="vh-orch",
    help="Run valohai.yaml steps on your own machines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("init")(daemon_cmds.init)
app.command("serve")(daemon_cmds.serve)
app.command("status")(operations.status)
app.command("replicas")(operations.replicas)
app.command("cleanup")(operations.cleanup)
app.command("rotate-key")(keys.rotate_key)
app.command("simulate")(simulate.simulate)
app.add_typer(operations.quota_app, name="quota")
app.add_typer(costs.app, name="cost")
app.add_typer(budgets.app, name="budget")
app.add_typer(projects.app, name="project")
projects.app.add_typer(secrets.app, name="secret")
app.add_typer(registries.app, name="registry")
app.add_typer(users.app, name="user")
app.add_typer(executions.app, name="exec")
app.add_typer(tasks.app, name="task")
app.add_typer(pipelines.app, name="pipeline")
app.add_typer(datasets.app, name="dataset")
app.add_typer(environments.app, name="env")
app.add_typer(environments.machine_app, name="machine")
app.add_typer(webhooks.app, name="webhook")
