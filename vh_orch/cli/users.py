"""`vh-orch user ...`: the people who use the HTTP API and the web UI, for the operator on the server.

Passwords are read from a prompt or from standard input (`--password-stdin`), never from an
argument (it would show in `ps` and in shell history). A token is printed once and kept only as its hash.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from vh_orch.cli.common import note, open_store, print_json, print_table
from vh_orch.errors import UserInputError

app = typer.Typer(help="Users of the HTTP API and web UI: passwords, tokens, administrators.",
                  no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="User name")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input (one trailing newline dropped)")
]


def _read_password(from_stdin: bool) -> str:
    from vh_orch.orchestrator.users import check_password

    if from_stdin:
        from vh_orch.cli.stdin import read_stdin_value

        return check_password(read_stdin_value("--password-stdin"))
    if not sys.stdin.isatty():
        raise UserInputError("no terminal to ask for the password on: give it with --password-stdin")
    import getpass

    first = getpass.getpass("password: ")
    check_password(first)
    if getpass.getpass("again: ") != first:
        raise UserInputError("the two passwords differ: nothing was changed")
    return first


@app.command("add")
def add(
    name: NameArg,
    admin: Annotated[bool, typer.Option("--admin", help="An administrator: sees and controls every project")] = False,
    password_stdin: PasswordStdin = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add a user. Without --password-stdin they have no password until `user passwd` (tokens still work)."""
    from vh_orch.orchestrator.users import check_user_name, hash_password

    check_user_name(name)
    password_hash = hash_password(_read_password(True)) if password_stdin else None
    user = open_store().create_user(name, is_admin=admin, password_hash=password_hash)
    if json_out:
        print_json(_user_dict(user, 0, 0))
        return
    print(f"user {name} added" + (" (administrator)" if admin else ""))
    if password_hash is None:
        note(f"{name} has no password: set one with `vh-orch user passwd {name}`, or make a token with "
             f"`vh-orch user token {name}`")


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List users: administrator or not, whether a password is set, projects owned, live tokens."""
    rows = open_store().list_users()
    if json_out:
        print_json([_user_dict(u, owned, tokens) for u, owned, tokens in rows])
        return
    print_table("users", ["name", "admin", "password", "projects owned", "tokens", "created"],
                [[u.name, "yes" if u.is_admin else "", "set" if u.password_hash else "none", owned, tokens,
                  u.created_at.strftime("%Y-%m-%d %H:%M")] for u, owned, tokens in rows])


@app.command("rm")
def rm(name: NameArg) -> None:
    """Remove a user, their tokens and memberships (not one who owns projects, nor the last administrator)."""
    open_store().remove_user(name)
    print(f"user {name} removed")


@app.command("passwd")
def passwd(name: NameArg, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (asked twice on a terminal, or read with --password-stdin); every API token
    and browser session of theirs ends (whoever knew the old password may have made some)."""
    from vh_orch.orchestrator.users import hash_password

    store = open_store()
    store.get_user(name)  # a clear error before asking for anything
    ended = store.set_password(name, hash_password(_read_password(password_stdin)))
    print(f"password of {name} set; their {ended} API token(s) and session(s) were ended")


@app.command("token")
def token(name: NameArg, json_out: Annotated[bool, typer.Option("--json", help='Print {"token": "..."}')] = False) -> None:
    """Create an API token for a user and print it, once: vh-orch keeps only its hash."""
    from vh_orch.orchestrator.users import new_token

    store = open_store()
    user = store.get_user(name)
    secret, digest = new_token()
    store.add_token(user.id, digest)  # type: ignore[arg-type]
    if json_out:
        print_json({"token": secret})
        return
    print(secret)
    note(f"a token for {name}: it is shown only now (`vh login --host URL --token TOKEN`); "
         f"`vh-orch user revoke-tokens {name}` ends every token of theirs")


@app.command("revoke-tokens")
def revoke_tokens(name: NameArg) -> None:
    """End every API token of a user (their password, if any, still works)."""
    store = open_store()
    count = store.revoke_tokens(store.get_user(name).id)  # type: ignore[arg-type]
    print(f"{count} token(s) of {name} revoked")


def _user_dict(user, owned: int, tokens: int) -> dict:  # type: ignore[no-untyped-def]
    return {"id": user.id, "name": user.name, "is_admin": user.is_admin,
            "has_password": user.password_hash is not None, "projects_owned": owned, "tokens": tokens,
            "created_at": user.created_at}
