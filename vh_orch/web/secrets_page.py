"""A project's secrets page, for its owner: the names, a form that sets one (write-only) and one that
removes one. Plain forms (CSRF token in a field), answered by the page itself: no script needed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from vh_orch.api.auth import check_csrf, session_secret
from vh_orch.api.deps import managed_project, settings_of, store_of
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.models import Project, User
from vh_orch.services import secrets as secrets_service
from vh_orch.web.pages import page_user, render

router = APIRouter(include_in_schema=False)


def _page(request: Request, user: User, project: Project, error: str | None = None,
          done: str | None = None, status: int = 200) -> HTMLResponse:
    shown = secrets_service.list_secrets(store_of(request), project.id)  # type: ignore[arg-type]
    answer = render(request, "secrets.html", user, project=project, secrets=shown, error=error, done=done)
    answer.status_code = status
    return answer


@router.get("/projects/{project_id}/secrets/", response_class=HTMLResponse)
def secrets_page(request: Request, project_id: str) -> HTMLResponse:
    user = page_user(request)
    return _page(request, user, managed_project(request, user, project_id))


@router.post("/projects/{project_id}/secrets", response_class=HTMLResponse)
def set_secret(request: Request, project_id: str, name: Annotated[str, Form()], value: Annotated[str, Form()],
               csrf: Annotated[str, Form()] = "") -> HTMLResponse:
    user = page_user(request)
    check_csrf(request, session_secret(request) or "", csrf)
    project = managed_project(request, user, project_id)
    try:
        created = secrets_service.set_secret(store_of(request), settings_of(request), project.id,  # type: ignore[arg-type]
                                             name, value, by=user.name)
    except UserInputError as exc:
        return _page(request, user, project, error=str(exc), status=400)
    return _page(request, user, project, done=f"Secret {name} {'set' if created else 'replaced'}.")


@router.post("/projects/{project_id}/secrets/remove")
def remove_secret(request: Request, project_id: str, name: Annotated[str, Form()],
                  csrf: Annotated[str, Form()] = "") -> RedirectResponse:
    user = page_user(request)
    check_csrf(request, session_secret(request) or "", csrf)
    project = managed_project(request, user, project_id)
    try:
        secrets_service.remove_secret(store_of(request), project.id, name)  # type: ignore[arg-type]
    except UserInputError:
        pass  # already gone (a second click): the page shows what is left
    return RedirectResponse(f"/projects/{project.id}/secrets/", status_code=303)
