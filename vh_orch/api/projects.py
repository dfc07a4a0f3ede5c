"""Login, the caller, and projects (Valohai's API: ../shared/VALOHAI_API.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request

from vh_orch.api.auth import CurrentUser, PasswordRefused, change_password, check_password_login
from vh_orch.api.deps import Count, clamp_page, field_error, page_json, settings_of, store_of, visible_project
from vh_orch.api.shapes import project_json
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.users import new_token
from vh_orch.services import projects as project_service

router = APIRouter(prefix="/api/v0")


@router.post("/get-token/")
def get_token(request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()]) -> dict[str, str]:
    """A new API token for a user name and password (failed logins are throttled per name and address)."""
    signed = check_password_login(request, username, password)
    if signed.wait:
        raise HTTPException(429, {"message": f"too many failed logins: try again in {signed.wait} s",
                                  "code": "throttled"}, headers={"Retry-After": str(signed.wait)})
    if signed.user is None:
        raise HTTPException(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
    token, digest = new_token()
    store_of(request).add_token(signed.user.id, digest)  # type: ignore[arg-type]
    return {"token": token}


@router.get("/users/me/")
def me(user: CurrentUser) -> dict[str, Any]:
    return {"id": user.id, "username": user.name, "is_admin": user.is_admin}


@router.post("/users/me/password/")
def my_password(request: Request, user: CurrentUser, old_password: Annotated[str, Form()],
                new_password: Annotated[str, Form()]) -> dict[str, Any]:
    """Change your own password; every other API token and browser session of yours ends (the token or
    session this request came with stays). A wrong old password counts as a failed login."""
    try:
        ended = change_password(request, user, old_password, new_password)
    except PasswordRefused as exc:
        if exc.wait:
            raise HTTPException(429, {"message": str(exc), "code": "throttled"},
                                headers={"Retry-After": str(exc.wait)}) from None
        raise field_error(exc.field, str(exc)) from None
    return {"username": user.name, "ended": ended}


@router.get("/projects/")
def projects(request: Request, user: CurrentUser, limit: Count = None, offset: Count = None) -> dict[str, Any]:
    store = store_of(request)
    visible = store.visible_projects(user)
    people = store.project_people()
    limit, offset = clamp_page(limit, offset)
    shown = [project_service.project_view(p, people) for p in visible[offset:offset + limit]]
    return page_json(request, len(visible), limit, offset, [project_json(request, p) for p in shown])


@router.post("/projects/", status_code=201)
def create_project(request: Request, user: CurrentUser, name: Annotated[str, Form()],
                   description: Annotated[str, Form()] = "") -> dict[str, Any]:
    """A new project for ad-hoc runs, owned by the caller (linking a repository is an operator's
    `vh-orch project add NAME --repo URL --owner USER`)."""
    try:
        project = project_service.create_project(store_of(request), settings_of(request), name, owner=user.name)
    except UserInputError as exc:
        raise field_error(exc.field or "name", str(exc)) from None
    return project_json(request, project)


@router.get("/projects/{project_id}/")
def project(request: Request, user: CurrentUser, project_id: str) -> dict[str, Any]:
    p = visible_project(request, user, project_id)
    store = store_of(request)
    return project_json(request, project_service.project_view(p, store.project_people()),
                        store.status_counts(p.id))  # type: ignore[arg-type]
