"""`vh-orch project ...`"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from vh_orch.cli import repos
from vh_orch.cli.common import open_store, print_json, print_table, settings
from vh_orch.cli.repos import GitHostKey, access_dict, added_notes
from vh_orch.cli.stdin import read_stdin_value
from vh_orch.errors import UserInputError

if TYPE_CHECKING:
    from vh_orch.services.projects import ProjectView
    from vh_orch.settings import Settings

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
    deploy_key: Annotated[str | None, typer.Option(
        "--deploy-key", metavar="generate",
        help="`generate`: make an ed25519 key pair for this project's SSH repository and print its public half "
             "(add it to the repository as a read-only deploy key)")] = None,
    git_host_key: GitHostKey = None,
    repo_token_stdin: Annotated[bool, typer.Option(
        "--repo-token-stdin", help="Read an HTTPS repository's access token from standard input")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the project as JSON")] = False,
) -> None:
    """Link a repository as a project; vh-orch keeps a mirror of it."""
    from vh_orch.services.projects import create_project

    if deploy_key is not None and deploy_key != "generate":
        raise UserInputError(f"--deploy-key: {deploy_key!r} is not `generate`")
    if repo is None and (deploy_key or git_host_key is not None or repo_token_stdin):
        raise UserInputError("--deploy-key, --git-host-key and --repo-token-stdin need --repo")
    s = settings()
    if repo is not None and (deploy_key or git_host_key is not None or repo_token_stdin):
        _add_private(s, name, repo, owner, deploy_key is not None, git_host_key,
                     read_stdin_value("--repo-token-stdin") if repo_token_stdin else None, json_out)
        return
    project = create_project(open_store(s), s, name, owner=owner, repo=repo)
    if json_out:
        print_json(_project_dict(project))
    else:
        print(f"project {name} added" + (f" (repository {project.repo_url})" if project.repo_url else ""))


def _add_private(s: Settings, name: str, repo: str, owner: str | None, deploy_key: bool, git_host_key: str | None,
                 token: str | None, json_out: bool) -> None:
    from vh_orch.services.repos import add_private_project

    added = add_private_project(open_store(s), s, name, repo=repo, owner=owner, deploy_key=deploy_key,
                                git_host_key=git_host_key, token=token)
    if json_out:
        print_json({**_project_dict(added.project), **access_dict(added.access), "fetch_error": added.fetch_error})
        return
    print(f"project {name} added (repository {added.project.repo_url})")
    added_notes(name, added.access.deploy_key, added.fetch_error, added.access.host_keys if added.learnt else ())


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List projects."""
    from vh_orch.services.projects import project_view

    store = open_store()
    people = store.project_people()
    projects = [project_view(p, people) for p in store.list_projects()]
    if json_out:
        print_json([_project_dict(p) for p in projects])
        return
    print_table(
        "projects",
        ["name", "repository", "owner", "shared with", "executions", "created"],
        [[p.name, p.repo_url or "(ad-hoc only)", p.owner, ", ".join(p.members), p.execution_count,
          p.created_at.strftime("%Y-%m-%d %H:%M")] for p in projects],
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
    from vh_orch.services.projects import project_view
    from vh_orch.storage.fetch_policy import normalise_grant

    added = [normalise_grant(b) for b in allow_bucket or []]
    removed = [normalise_grant(b, "--disallow-bucket") for b in disallow_bucket or []]
    store = open_store()
    updated = project_view(store.update_bucket_grants(project, added, removed), store.project_people())
    if json_out:
        print_json(_project_dict(updated))
    else:
        grants = ", ".join(updated.allowed_buckets) or "none"
        print(f"project {project} updated; buckets its API executions may read: {grants}")


app.command("fetch")(repos.fetch)
app.command("key")(repos.key)


def _project_dict(p: ProjectView) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "repo_url": p.repo_url,
        "owner": p.owner,
        "members": list(p.members),
        "execution_count": p.execution_count,
        "created_at": p.created_at,
        "allowed_buckets": list(p.allowed_buckets),
    }
