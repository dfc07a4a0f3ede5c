"""`vh-orch project ...`"""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import open_store, print_json, print_table, settings
from vh_orch.errors import UserInputError

app = typer.Typer(help="Projects: named spaces linked to a Git repository.", no_args_is_help=True)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Project name: letters, digits, . _ -")],
    repo: Annotated[
        str | None, typer.Option("--repo", help="Git URL or local repository folder (omit for ad-hoc only)")
    ] = None,
    owner: Annotated[
        str | None, typer.Option("--owner", help="The user who owns it (default: the administrator `admin`)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the project as JSON")] = False,
) -> None:
    """Link a repository as a project; vh-orch keeps a mirror of it."""
    from vh_orch.storage.snapshots import create_mirror, normalise_repo_url

    from vh_orch.orchestrator.users import check_project_name

    check_project_name(name)
    s = settings()
    store = open_store(s)
    existing = {p.name for p in store.list_projects()}
    if name in existing:
        raise UserInputError(f"a project named {name!r} already exists")
    owner_id = store.get_user(owner).id if owner is not None else None
    repo_url = mirror = None
    if repo is not None:
        repo_url = normalise_repo_url(repo)
        mirror_path = s.repos_dir / f"{name}.git"
        create_mirror(repo_url, mirror_path)
        mirror = str(mirror_path)
    project = store.create_project(name, repo_url, mirror, owner_id=owner_id)
    if json_out:
        print_json(_project_dict(project, store.project_people().get(project.id, ("?", []))))
    else:
        print(f"project {name} added" + (f" (repository {repo_url})" if repo_url else ""))


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List projects."""
    store = open_store()
    projects = store.list_projects()
    people = store.project_people()
    if json_out:
        print_json([_project_dict(p, people.get(p.id, ("?", []))) for p in projects])
        return
    print_table(
        "projects",
        ["name", "repository", "owner", "shared with", "executions", "created"],
        [[p.name, p.repo_url or "(ad-hoc only)", people.get(p.id, ("?", []))[0],
          ", ".join(people.get(p.id, ("?", []))[1]), p.execution_counter, p.created_at.strftime("%Y-%m-%d %H:%M")]
         for p in projects],
    )


ProjectArg = Annotated[str, typer.Argument(help="Project name")]
UserArg = Annotated[str, typer.Argument(help="User name")]


@app.command("share")
def share(project: ProjectArg, user: UserArg) -> None:
    """Let a user see and run the project's executions (as its owner does)."""
    changed = open_store().share_project(project, user)
    print(f"{project} shared with {user}" if changed else f"{user} could already see {project}: nothing changed")


@app.command("unshare")
def unshare(project: ProjectArg, user: UserArg) -> None:
    """Take a member's access away (not the owner's: `project chown` first)."""
    changed = open_store().unshare_project(project, user)
    print(f"{project} no longer shared with {user}" if changed else f"{user} was not a member of {project}: "
          "nothing changed")


@app.command("chown")
def chown(project: ProjectArg, user: UserArg) -> None:
    """Give a project another owner; the previous owner stays a member."""
    open_store().chown_project(project, user)
    print(f"{project} is owned by {user}")


@app.command("update")
def update(
    project: ProjectArg,
    allow_bucket: Annotated[list[str] | None, typer.Option(
        "--allow-bucket", metavar="s3://BUCKET[/PREFIX]",
        help="Let the project's executions submitted over the API read inputs here with the daemon's credentials "
             "(s3:// or gs://; a prefix is a folder); repeatable")] = None,
    disallow_bucket: Annotated[list[str] | None, typer.Option(
        "--disallow-bucket", metavar="s3://BUCKET[/PREFIX]", help="Take a grant back; repeatable")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the project as JSON")] = False,
) -> None:
    """Change a project's settings: the buckets its executions submitted over the API may read."""
    from vh_orch.storage.fetch_policy import normalise_grant

    added = [normalise_grant(b) for b in allow_bucket or []]
    removed = [normalise_grant(b, "--disallow-bucket") for b in disallow_bucket or []]
    store = open_store()
    updated = store.update_bucket_grants(project, added, removed)
    if json_out:
        print_json(_project_dict(updated, store.project_people().get(updated.id, ("?", []))))
    else:
        grants = ", ".join(updated.allowed_buckets) or "none"
        print(f"project {project} updated; buckets its API executions may read: {grants}")


def _project_dict(p, people: tuple[str, list[str]]) -> dict:  # type: ignore[no-untyped-def]
    return {
        "id": p.id,
        "name": p.name,
        "repo_url": p.repo_url,
        "owner": people[0],
        "members": people[1],
        "execution_count": p.execution_counter,
        "created_at": p.created_at,
        "allowed_buckets": p.allowed_buckets,
    }
