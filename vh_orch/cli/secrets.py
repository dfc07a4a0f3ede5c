"""`vh-orch project secret ...`: values every execution of a project gets as environment variables,
kept encrypted with the installation's key (vh_orch/keyring.py) and never shown again."""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import note, open_store, print_json, print_table, settings

app = typer.Typer(help="Project secrets: environment variables for every execution, stored encrypted, "
                       "masked in logs, never shown.", no_args_is_help=True)

ProjectArg = Annotated[str, typer.Argument(help="Project name")]
KeyArg = Annotated[str, typer.Argument(help="The environment variable's name (letters, digits, _)")]


@app.command("set")
def set_(
    project: ProjectArg,
    key: KeyArg,
    value_stdin: Annotated[bool, typer.Option(
        "--value-stdin", help="Read the value from standard input (one trailing newline dropped)")] = False,
) -> None:
    """Set a secret (or give it a new value); executions started from now on get it."""
    from vh_orch.cli.stdin import read_stdin_value
    from vh_orch.errors import UserInputError
    from vh_orch.services.secrets import set_secret

    if not value_stdin:
        raise UserInputError("give the value on standard input with --value-stdin (never as an argument: it "
                             "would show in `ps` and in shell history)")
    value = read_stdin_value("--value-stdin")
    s = settings()
    store = open_store(s)
    created = set_secret(store, s, store.get_project(project).id, key, value)  # type: ignore[arg-type]
    print(f"secret {key} of project {project} {'set' if created else 'replaced'}")
    if len(value) < 4:
        note(f"{key}'s value is {len(value)} character(s) long: masking it hides every such string in the "
             "project's logs")


@app.command("list")
def list_(project: ProjectArg, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The project's secrets: names and dates, never values."""
    from vh_orch.services.secrets import list_secrets

    store = open_store()
    secrets = list_secrets(store, store.get_project(project).id)  # type: ignore[arg-type]
    if json_out:
        print_json([secret.as_dict() for secret in secrets])
        return
    print_table(f"secrets of {project}", ["name", "set by", "created", "updated"],
                [[x.name, x.created_by or "", x.created_at.strftime("%Y-%m-%d %H:%M"),
                  x.updated_at.strftime("%Y-%m-%d %H:%M")] for x in secrets])


@app.command("rm")
def rm(project: ProjectArg, key: KeyArg) -> None:
    """Remove a secret; executions started from now on no longer get it."""
    from vh_orch.services.secrets import remove_secret

    store = open_store()
    remove_secret(store, store.get_project(project).id, key)  # type: ignore[arg-type]
    print(f"secret {key} of project {project} removed")
