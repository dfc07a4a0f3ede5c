"""Users, passwords, API tokens and project ownership, through the real CLI and the real database."""

from __future__ import annotations

import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from conftest import Result, VhOrch
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.users import token_digest, verify_password

PASSWORD = "correct horse battery"


def store_of(vh: VhOrch) -> Store:
    return Store(f"sqlite:///{vh.home / 'state.db'}")


def with_stdin(vh: VhOrch, text: str, *args: str, check: bool = True) -> Result:
    return vh(*args, stdin=text, check=check)


def database_bytes(home: Path) -> bytes:
    """Everything SQLite holds on disk for this installation: the file, its WAL, and a fresh dump.

    The files are read by `cat`, never opened here: closing any descriptor of a database file drops
    every POSIX lock this process's SQLite connections hold on it (the Stores these tests keep open
    would then read stale pages after another process writes)."""
    files = [str(home / name) for name in ("state.db", "state.db-wal", "state.db-shm") if (home / name).exists()]
    raw = subprocess.run(["cat", *files], capture_output=True, check=True, timeout=60).stdout
    with closing(sqlite3.connect(home / "state.db")) as db:
        dump = "\n".join(db.iterdump()).encode()
    return raw + dump


def test_every_installation_starts_with_an_admin_who_owns_projects_made_without_an_owner(vh: VhOrch) -> None:
    assert [(u["name"], u["is_admin"], u["has_password"]) for u in vh.json("user", "list")] == [
        ("admin", True, False)]
    vh("project", "add", "p")
    assert [(p["name"], p["owner"], p["members"]) for p in vh.json("project", "list")] == [("p", "admin", [])]


def test_passwords_and_tokens_are_kept_only_as_hashes(vh: VhOrch) -> None:
    with_stdin(vh, PASSWORD + "\n", "user", "add", "alice", "--password-stdin")
    token = vh.json("user", "token", "alice")["token"]
    assert len(token) >= 43 and token.startswith("vho_")
    second = vh("user", "token", "alice").stdout.strip()  # plain form: the token alone on stdout
    assert second != token and second.startswith("vho_")

    stored = database_bytes(vh.home)
    for secret in (PASSWORD, token, second):
        assert secret.encode() not in stored
    store = store_of(vh)
    alice = store.get_user("alice")
    assert alice.password_hash is not None and alice.password_hash.startswith("$argon2id$")
    assert verify_password(alice.password_hash, PASSWORD)
    assert not verify_password(alice.password_hash, PASSWORD + "x")
    assert not verify_password(None, PASSWORD)  # no password set: nothing matches
    assert store.user_for_token(token_digest(token)).name == "alice"  # type: ignore[union-attr]
    assert store.user_for_token(token_digest(token + "x")) is None
    assert [u["tokens"] for u in vh.json("user", "list") if u["name"] == "alice"] == [2]

    assert "2 token(s) of alice revoked" in vh("user", "revoke-tokens", "alice").stdout
    assert store.user_for_token(token_digest(token)) is None
    assert store.user_for_token(token_digest(second)) is None
    assert [u["tokens"] for u in vh.json("user", "list") if u["name"] == "alice"] == [0]
    assert verify_password(store.get_user("alice").password_hash, PASSWORD)  # the password still works

    with_stdin(vh, "another password\n", "user", "passwd", "alice", "--password-stdin")
    changed = store.get_user("alice").password_hash
    assert verify_password(changed, "another password") and not verify_password(changed, PASSWORD)


@pytest.mark.parametrize(
    ("stdin", "args", "message"),
    [
        ("", ["user", "add", "bad name"], "user name 'bad name' is not valid"),
        ("", ["user", "add", "-x"], ""),  # an option Typer does not know: a usage error
        ("", ["user", "add", "admin"], "a user named 'admin' already exists"),
        ("short\n", ["user", "add", "bob", "--password-stdin"], "the password is too short"),
        ("", ["user", "add", "bob", "--password-stdin"], "standard input is empty"),
        ("", ["user", "passwd", "bob"], "no user named 'bob'"),
        ("", ["user", "passwd", "admin"], "no terminal to ask for the password on: give it with --password-stdin"),
        ("", ["user", "token", "nobody"], "no user named 'nobody'"),
        ("", ["user", "rm", "admin"], "admin is the last administrator"),
        ("", ["project", "add", "q", "--owner", "nobody"], "no user named 'nobody'"),
        ("", ["project", "share", "p", "nobody"], "no user named 'nobody'"),
        ("", ["project", "share", "nope", "admin"], "no project named 'nope'"),
        ("", ["project", "unshare", "p", "admin"], "admin owns p: give it another owner first"),
    ],
)
def test_bad_user_commands_say_what_is_wrong_and_change_nothing(vh: VhOrch, stdin: str, args: list[str],
                                                                  message: str) -> None:
    vh("project", "add", "p")
    before = (vh.json("user", "list"), vh.json("project", "list"))
    result = with_stdin(vh, stdin, *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert (vh.json("user", "list"), vh.json("project", "list")) == before


def test_projects_have_an_owner_and_members(vh: VhOrch) -> None:
    for name in ("alice", "bob", "carol"):
        vh("user", "add", name)
    vh("project", "add", "p", "--owner", "alice")
    assert "p shared with bob" in vh("project", "share", "p", "bob").stdout
    assert "nothing changed" in vh("project", "share", "p", "bob").stdout
    assert "nothing changed" in vh("project", "share", "p", "alice").stdout  # the owner already sees it
    vh("project", "share", "p", "carol")
    assert [(p["owner"], p["members"]) for p in vh.json("project", "list")] == [("alice", ["bob", "carol"])]

    store = store_of(vh)
    users = {name: store.get_user(name) for name in ("alice", "bob", "carol", "admin")}
    vh("user", "add", "dave")
    dave = store.get_user("dave")
    project_id = store.get_project("p").id
    assert [p.name for p in store.visible_projects(users["bob"])] == ["p"]
    assert store.visible_projects(dave) == [] and not store.can_see(dave, project_id)  # type: ignore[arg-type]
    assert store.can_see(users["admin"], project_id)  # type: ignore[arg-type]

    assert "no longer shared with carol" in vh("project", "unshare", "p", "carol").stdout
    assert not store.can_see(users["carol"], project_id)  # type: ignore[arg-type]
    # A user who owns a project cannot be removed until it has another owner; the old owner stays a member.
    refused = vh("user", "rm", "alice", check=False)
    assert refused.returncode == 1 and "alice owns 1 project(s) (p)" in refused.stderr
    vh("project", "chown", "p", "bob")
    assert [(p["owner"], p["members"]) for p in vh.json("project", "list")] == [("bob", ["alice"])]
    vh("user", "rm", "alice")
    assert [(p["owner"], p["members"]) for p in vh.json("project", "list")] == [("bob", [])]
    assert [u["name"] for u in vh.json("user", "list")] == ["admin", "bob", "carol", "dave"]
