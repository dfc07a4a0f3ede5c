"""The Valohai API subset the `vh` client (valohai-cli 0.37) uses: ../shared/VALOHAI_API.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request

from vh_orch.api.auth import CurrentUser
from vh_orch.orchestrator.models import Project, User
from vh_orch.orchestrator.users import new_token, verify_password

router = APIRouter(prefix="/api/v0")

NOT_FOUND = "Not found."


@router.post("/get-token/")
def get_token(request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()]) -> dict[str, str]:
    """A new API token for a user name and password (failed logins are throttled per name and address)."""
    store = request.app.state.store
    throttle = request.app.state.throttle
    address = request.client.host if request.client else "?"
    wait = throttle.retry_after(username, address)
    if wait > 0:
        raise HTTPException(429, {"message": f"too many failed logins: try again in {int(wait) + 1} s",
                                  "code": "throttled"}, headers={"Retry-After": str(int(wait) + 1)})
    user = store.find_user(username)
    if not verify_password(user.password_hash if user else None, password) or user is None:
        throttle.failed(username, address)
        raise HTTPException(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
    throttle.succeeded(username)
    token, digest = new_token()
    store.add_token(user.id, digest)
    return {"token": token}


@router.get("/users/me/")
def me(user: CurrentUser) -> dict[str, Any]:
    return {"id": user.id, "username": user.name, "is_admin": user.is_admin}


@router.get("/projects/")
def projects(request: Request, user: CurrentUser, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    store = request.app.state.store
    visible = store.visible_projects(user)
    people = store.project_people()
    page = visible[max(offset, 0):max(offset, 0) + max(min(limit, 10_000), 0)]
    return {"count": len(visible), "next": None, "previous": None,
            "results": [project_json(request, p, people) for p in page]}


@router.get("/projects/{project_id}/")
def project(request: Request, user: CurrentUser, project_id: int) -> dict[str, Any]:
    return project_json(request, visible_project(request, user, project_id), request.app.state.store.project_people())


def visible_project(request: Request, user: User, project_id: int) -> Project:
    """The project if this user may see it; 404 otherwise, whether or not it exists."""
    store = request.app.state.store
    if not store.can_see(user, project_id):
        raise HTTPException(404, NOT_FOUND)
    return store.get_project_by_id(project_id)


def project_json(request: Request, p: Project, people: dict[int, tuple[str, list[str]]]) -> dict[str, Any]:
    owner, members = people.get(p.id, ("?", []))  # type: ignore[arg-type]
    return {
        "id": p.id,
        "name": p.name,
        "description": "",
        "owner": {"username": owner},
        "members": [{"username": m} for m in members],
        "yaml_path": "valohai.yaml",
        "repository": p.repo_url,
        "urls": {"display": str(request.url_for("project", project_id=p.id))},
    }
