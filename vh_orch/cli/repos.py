"""`vh-orch project fetch` and `vh-orch project key`: a project's private repository (services/repos.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from vh_orch.cli.common import note, open_store, print_json, settings

if TYPE_CHECKING:
    from vh_orch.services.repos import RepoAccess

ProjectArg = Annotated[str, typer.Argument(help="Project name")]
GitHostKey = Annotated[str | None, typer.Option(
    "--git-host-key", metavar="LINE",
    help="Pin the Git server's host key (`ssh-ed25519 AAAA...`, or a line of `ssh-keyscan HOST`); without it "
         "the key is learnt on the first successful fetch and pinned")]


def fetch(
    project: ProjectArg,
    git_host_key: GitHostKey = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the refs fetched as JSON")] = False,
) -> None:
    """Fetch the project's repository now (with its deploy key or token); --git-host-key pins a new host
    key first, when the server's key really changed."""
    from vh_orch.services.repos import fetch_project
    from vh_orch.storage.git_auth import fingerprint

    s = settings()
    fetched = fetch_project(open_store(s), s, project, git_host_key)
    if json_out:
        print_json({"project": project, "refs": [{"ref": ref, "identifier": sha} for ref, sha in fetched.moved],
                    "pinned_host_keys": list(fetched.pinned)})
        return
    for key in fetched.pinned:
        note(f"pinned the Git server's host key {key.split()[0]} {fingerprint(key)}: a different key stops "
             "fetches from now on")
    print(f"fetched {project}: " + (", ".join(f"{ref} {sha[:12]}" for ref, sha in fetched.moved)
                                    or "nothing new"))


def key(
    project: ProjectArg,
    rotate: Annotated[bool, typer.Option(
        "--rotate", help="Make a new deploy key (the old one stops working here: replace it on the Git host)")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the keys as JSON")] = False,
) -> None:
    """Show the project's deploy key (its public half, for the Git host) and the pinned host key."""
    from vh_orch.services.repos import repo_access, rotate_deploy_key

    s = settings()
    store = open_store(s)
    access = rotate_deploy_key(store, s, project) if rotate else repo_access(store.get_project(project))
    if json_out:
        print_json(access_dict(access))
        return
    if access.deploy_key is None:
        print(f"project {project} has no deploy key (`vh-orch project key {project} --rotate` makes one)")
    else:
        print(access.deploy_key)
        if rotate:
            note(f"a new deploy key for {project}: add it to the repository as a read-only deploy key and remove "
                 "the old one there")
    for host_key, print_ in zip(access.host_keys, access.host_key_fingerprints, strict=True):
        note(f"pinned Git host key: {host_key.split()[0]} {print_}")


def added_notes(name: str, deploy_key: str | None, fetch_error: str | None, learnt: tuple[str, ...]) -> None:
    """What `project add` of a private repository tells the operator to do next."""
    from vh_orch.storage.git_auth import fingerprint

    if deploy_key is not None:
        note("add this public key to the repository as a read-only deploy key:")
        print(deploy_key)
    if fetch_error is not None:
        note(f"the first fetch failed ({fetch_error}); once the key is in place: `vh-orch project fetch {name}`")
    for host_key in learnt:
        note(f"learnt and pinned the Git server's host key {host_key.split()[0]} {fingerprint(host_key)}")


def access_dict(access: RepoAccess) -> dict[str, Any]:
    return {"project": access.project, "repo_url": access.repo_url, "deploy_key": access.deploy_key,
            "git_host_keys": list(access.host_keys), "git_host_key_fingerprints": list(access.host_key_fingerprints),
            "has_token": access.has_token}
