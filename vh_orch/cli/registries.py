"""`vh-orch registry ...`: credentials for private image registries, used by machines for a pull only."""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import open_store, print_json, print_table, settings

app = typer.Typer(help="Private image registries: credentials machines log in with to pull (stored encrypted).",
                  no_args_is_help=True)

HostArg = Annotated[str, typer.Argument(help="The registry's host as image names start with it, e.g. "
                                             "registry.example.com or 127.0.0.1:5000")]
EnvOption = Annotated[str | None, typer.Option("--env", help="Only for this environment (default: every one)")]


@app.command("add")
def add(
    host: HostArg,
    username: Annotated[str, typer.Option("--username", help="The registry's user name")],
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password (or token) from standard input (one trailing newline dropped)")
    ] = False,
    env: EnvOption = None,
) -> None:
    """Store a registry's credentials; pulls of images from it log in with them (for the pull only)."""
    from vh_orch.cli.stdin import read_stdin_value
    from vh_orch.errors import UserInputError
    from vh_orch.services.registries import add_registry

    if not password_stdin:
        raise UserInputError("give the password on standard input with --password-stdin (never as an argument)")
    password = read_stdin_value("--password-stdin")
    s = settings()
    created = add_registry(open_store(s), s, host, username, password, env)
    where = f"environment {env}" if env else "every environment"
    print(f"registry {host.lower()} {'added' if created else 'updated'} for {where}")


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Stored registry credentials: hosts, environments and user names, never passwords."""
    from vh_orch.services.registries import list_registries

    shown = list_registries(open_store())
    if json_out:
        print_json([r.as_dict() for r in shown])
        return
    print_table("registries", ["host", "environment", "username", "added"],
                [[r.host, r.environment or "(every one)", r.username, r.created_at.strftime("%Y-%m-%d %H:%M")]
                 for r in shown])


@app.command("rm")
def rm(host: HostArg, env: EnvOption = None) -> None:
    """Remove a registry's credentials (those for every environment, or with --env one environment's)."""
    from vh_orch.services.registries import remove_registry

    remove_registry(open_store(), host, env)
    print(f"registry {host.lower()} removed" + (f" for environment {env}" if env else ""))
