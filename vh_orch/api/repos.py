"""A project's private repository over the API: its deploy key's public half (to paste into the Git host)
and the pinned Git host key, for the project's owner alone; anyone else gets 404 (a member runs the
project's code, but its access to the repository is the owner's business)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import field_error, not_found, project_public_id, settings_of, store_of, visible_project
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.models import Project, User
from vh_orch.services.repos import RepoAccess, repo_access, rotate_deploy_key

router = APIRouter(prefix="/api/v0")


def owned_project(request: Request, user: User, project_id: str) -> Project:
    """The project if this user owns it; 404 otherwise, whether or not it exists or they may see it."""
    project = visible_project(request, user, project_id)
    if project.owner_id != user.id:
        raise not_found()
    return project


@router.get("/projects/{project_id}/deploy-key/")
def deploy_key(request: Request, user: CurrentUser, project_id: str) -> dict[str, Any]:
    """The project's deploy key (public half) and pinned Git host keys; for its owner."""
    project = owned_project(request, user, project_id)
    return _access_json(repo_access(project), project.id)  # type: ignore[arg-type]


@router.post("/projects/{project_id}/deploy-key/rotate/")
def rotate(request: Request, user: CurrentUser, project_id: str) -> dict[str, Any]:
    """A new deploy key for the project (install its public half on the Git host); for its owner."""
    project = owned_project(request, user, project_id)
    try:
        access = rotate_deploy_key(store_of(request), settings_of(request), project.name)
    except UserInputError as exc:
        raise field_error("project", str(exc)) from None
    return _access_json(access, project.id)  # type: ignore[arg-type]


def _access_json(access: RepoAccess, project_id: int) -> dict[str, Any]:
    return {"project": project_public_id(project_id),
            "repo_url": access.repo_url, "deploy_key": access.deploy_key,
            "git_host_keys": [{"key": key, "fingerprint": print_} for key, print_ in
                              zip(access.host_keys, access.host_key_fingerprints, strict=True)],
            "has_token": access.has_token}
