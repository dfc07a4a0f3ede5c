"""Projects: the one way to create one (`vh-orch project add` and `POST /api/v0/projects/` both come
here), and a project as both faces show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from vh_orch.errors import NotFound, UserInputError, about
from vh_orch.orchestrator.users import check_project_name

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Project
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings

# For every project id: its owner's name and its members' names (Store.project_people).
People = dict[int, tuple[str, list[str]]]


@dataclass(frozen=True)
class ProjectView:
    """A project with the names of the people who may see it."""

    id: int
    name: str
    repo_url: str | None
    owner: str
    members: tuple[str, ...]
    execution_count: int
    created_at: datetime
    allowed_buckets: tuple[str, ...]


def project_view(project: Project, people: People) -> ProjectView:
    owner, members = people.get(project.id, ("?", []))  # type: ignore[arg-type]
    return ProjectView(id=project.id, name=project.name, repo_url=project.repo_url,  # type: ignore[arg-type]
                       owner=owner, members=tuple(members), execution_count=project.execution_counter,
                       created_at=project.created_at, allowed_buckets=tuple(project.allowed_buckets))


def check_new_project(store: Store, name: str, owner: str | None) -> int | None:
    """The owner's user id (None: the default) for a new project named `name`; raises UserInputError
    naming `name` (malformed or taken: refused before cloning, so that a taken name costs no clone) or
    `owner` (no such user)."""
    with about("name"):
        check_project_name(name)
        try:
            store.get_project(name)
        except NotFound:
            pass
        else:
            raise UserInputError(f"a project named {name!r} already exists")
    with about("owner"):
        return store.get_user(owner).id if owner is not None else None


def create_project(store: Store, settings: Settings, name: str, *, owner: str | None = None,
                   repo: str | None = None) -> ProjectView:
    """A new project named `name`, owned by the user named `owner` (default: the first administrator).

    With a repository (a Git URL or a local folder) it keeps a mirror of it under the home's repos/,
    made before the row so that a project never exists without the mirror its commits come from. Only
    an operator links a repository (the API never passes one: cloning is the daemon reaching wherever
    the URL points, with its own credentials). Raises UserInputError naming `name`, `owner` or `repo`.
    """
    owner_id = check_new_project(store, name, owner)
    repo_url = mirror = None
    if repo is not None:
        from vh_orch.storage.snapshots import create_mirror, normalise_repo_url

        with about("repo"):
            repo_url = normalise_repo_url(repo)
            mirror_path = settings.repos_dir / f"{name}.git"
            create_mirror(repo_url, mirror_path)
        mirror = str(mirror_path)
    with about("name"):  # another request took the name since the check above
        project = store.create_project(name, repo_url, mirror, owner_id=owner_id)
    return project_view(project, store.project_people())
