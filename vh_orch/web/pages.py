"""The web UI's pages: sign-in and sign-out, projects, a project's executions, tasks, pipelines and
datasets (and forms that start new work), an execution, a task, a pipeline, a dataset; your account
(a password change) and the API's docs.

Pages are server-rendered shells (Jinja2, autoescaped); the data comes from the same HTTP API the
`vh` client uses, fetched by static/app.js with the session cookie, and live from its SSE stream
(a task's and a pipeline's page poll their one endpoint instead: every 2 s until it ends).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from vh_orch.api.auth import (
    SESSION_DAYS,
    PasswordRefused,
    change_password,
    check_csrf,
    check_password_login,
    clear_session_cookies,
    csrf_token,
    same_origin,
    session_secret,
    session_user,
    set_session_cookie,
)
from vh_orch.api.deps import may_manage, store_of, visible_execution, visible_pipeline, visible_project, visible_task
from vh_orch.orchestrator.models import Project, User
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.tasks.summary import task_title
from vh_orch.orchestrator.users import new_token, token_digest
from vh_orch.timeutil import utcnow
from vh_orch.values import FINAL_PIPELINE_STATUSES, TaskStatus

if TYPE_CHECKING:
    from vh_orch.services.repos import RepoAccess

HERE = Path(__file__).parent
STATIC = HERE / "static"
router = APIRouter(include_in_schema=False)
MAX_VERSIONS_SHOWN = 100  # a dataset page lists this many versions, newest first
MAX_FILES_SHOWN = 500  # and this many files of each
templates = Jinja2Templates(directory=str(HERE / "templates"))


class SignIn(Exception):
    """A page was asked for without a session: the visitor is sent to sign in, then back."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def sign_in_redirect(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignIn)
    return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)


def page_user(request: Request) -> User:
    user = session_user(request)
    if user is None:
        raise SignIn(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return user


def render(request: Request, template: str, user: User | None, **context: Any) -> HTMLResponse:
    session = session_secret(request)
    return templates.TemplateResponse(request, template, {
        "user": user, "csrf": csrf_token(session) if session else "", **context})


# Paths whose answers are data, not pages: a 404 there stays JSON.
NOT_PAGES = ("/api/", "/static/", "/metrics")


def is_page_request(request: Request) -> bool:
    """A browser's page (not the API, a static file or the metrics): its errors are HTML pages."""
    return request.method in ("GET", "HEAD") and not request.url.path.startswith(NOT_PAGES)


def not_found_page(request: Request) -> HTMLResponse:
    """The site's "not found" page, inside its layout with a way home: a bad link, or another user's
    execution, task, pipeline or dataset (the same answer, so nothing tells the two apart)."""
    answer = render(request, "not_found.html", session_user(request), path=request.url.path)
    answer.status_code = 404
    return answer


def safe_next(path: str | None) -> str:
    """Only a path of this site: never `//host` or a URL (no open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 (the query's name)
    return render(request, "login.html", None, next=safe_next(next), error=None)


@router.post("/login", response_model=None)
def login(request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()],
          next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
    if not same_origin(request):
        raise HTTPException(403, "Cross-site request refused: its Origin is not this site.")
    signed = check_password_login(request, username, password)
    if signed.wait:
        return render(request, "login.html", None, next=safe_next(next),
                      error=f"Too many failed sign-ins: try again in {signed.wait} s.")
    if signed.user is None:
        answer = render(request, "login.html", None, next=safe_next(next),
                        error="Unable to sign in with that user name and password.")
        answer.status_code = 400
        return answer
    token, digest = new_token()
    store_of(request).add_token(signed.user.id, digest, kind="session",  # type: ignore[arg-type]
                                expires_at=utcnow() + timedelta(days=SESSION_DAYS))
    answer = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(request, answer, token)
    return answer


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> RedirectResponse:
    session = session_secret(request)
    if session:
        check_csrf(request, session, csrf)
        store_of(request).end_token(token_digest(session))
    answer = RedirectResponse("/login", status_code=303)
    clear_session_cookies(answer)
    return answer


@router.get("/account/", response_class=HTMLResponse)
def account_page(request: Request) -> HTMLResponse:
    """The signed-in user's own account: change the password."""
    return render(request, "account.html", page_user(request), error=None, done=None)


@router.post("/account/password", response_class=HTMLResponse)
def account_password(request: Request, old_password: Annotated[str, Form()], new_password: Annotated[str, Form()],
                     again: Annotated[str, Form()], csrf: Annotated[str, Form()] = "") -> HTMLResponse:
    """Change the password: this browser stays signed in, every other session and API token ends."""
    user = page_user(request)
    check_csrf(request, session_secret(request) or "", csrf)
    try:
        if new_password != again:
            raise PasswordRefused("again", "the two new passwords differ: nothing was changed")
        ended = change_password(request, user, old_password, new_password)
    except PasswordRefused as exc:
        answer = render(request, "account.html", user, error=str(exc), done=None)
        answer.status_code = 429 if exc.wait else 400
        return answer
    return render(request, "account.html", user, error=None,
                  done=f"Password changed: {ended} other session(s) and API token(s) ended.")


@router.get("/api/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    """The HTTP API's documentation (swagger-ui, vendored: the page names no other host)."""
    return templates.TemplateResponse(request, "api_docs.html", {})


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    user = page_user(request)
    store = store_of(request)
    projects = store.visible_projects(user)
    counts = {p.id: store.status_counts(p.id) for p in projects}  # type: ignore[arg-type]
    return render(request, "projects.html", user, projects=projects, counts=counts,
                  people=store.project_people())


@router.get("/projects/{project_id}/", response_class=HTMLResponse)
def project_page(request: Request, project_id: str) -> HTMLResponse:
    """A project's executions, tasks, pipelines and datasets, and the forms that start new work."""
    from vh_orch.services.datasets import project_datasets

    user = page_user(request)
    project = visible_project(request, user, project_id)
    store = store_of(request)
    return render(request, "project.html", user, project=project, environments=usable_environments(store, user),
                  datasets=project_datasets(store, project.id),  # type: ignore[arg-type]
                  repo_access=_repo_access_for(project, user), webhooks=project_webhooks(store, user, project))


def _repo_access_for(project: Project, user: User) -> RepoAccess | None:
    """The project's deploy key and pinned host keys, for its owner alone (api/repos.py)."""
    from vh_orch.services.repos import repo_access

    if project.owner_id != user.id or not (project.deploy_key_public or project.git_host_key or project.repo_token):
        return None
    return repo_access(project)


def project_webhooks(store: Store, user: User, project: Project) -> list[Any] | None:
    """The project's webhooks for its owner or an administrator; None (no card) for anyone else."""
    from vh_orch.services.webhooks import list_webhooks

    if not may_manage(user, project):
        return None
    return list_webhooks(store, [project.id])  # type: ignore[list-item]


def usable_environments(store: Store, user: User) -> list[str]:
    """The environments this user may submit to (an administrator: every one)."""
    from vh_orch.cloud_drivers.settings import settings_of
    from vh_orch.orchestrator.access import open_to

    return [e.name for e in store.list_environments() if user.is_admin or open_to(settings_of(e), user.name)]


@router.get("/datasets/{dataset_id}/", response_class=HTMLResponse)
def dataset_page(request: Request, dataset_id: str) -> HTMLResponse:
    """A dataset: its versions, newest first, each with its files and the execution that made it."""
    from vh_orch.api.datasets import visible_dataset
    from vh_orch.services.datasets import version_detail

    user = page_user(request)
    dataset = visible_dataset(request, user, dataset_id)
    store = store_of(request)
    newest = store.dataset_versions(dataset.id)[:MAX_VERSIONS_SHOWN]  # type: ignore[arg-type]
    versions = [version_detail(store, v.version) for v in newest]
    return render(request, "dataset.html", user, dataset=dataset, project=store.get_project_by_id(dataset.project_id),
                  versions=versions, max_files=MAX_FILES_SHOWN)


@router.get("/executions/{ref}/", response_class=HTMLResponse)
def execution_page(request: Request, ref: str) -> HTMLResponse:
    user = page_user(request)
    execution = visible_execution(request, user, ref)
    store = store_of(request)
    project = store.get_project_by_id(execution.project_id)
    task = store.get_task(execution.task_id) if execution.task_id is not None else None
    return render(request, "execution.html", user, execution=execution, project=project, task=task,
                  task_title=task_title(task) if task else "")


@router.get("/tasks/{ref}/", response_class=HTMLResponse)
def task_page(request: Request, ref: str) -> HTMLResponse:
    """A task: its children in a table, and their parameters against the target metric in charts."""
    user = page_user(request)
    task = visible_task(request, user, ref)
    project = store_of(request).get_project_by_id(task.project_id)
    return render(request, "task.html", user, task=task, project=project, task_title=task_title(task),
                  final=TaskStatus(task.status).is_final)


@router.get("/pipelines/{ref}/", response_class=HTMLResponse)
def pipeline_page(request: Request, ref: str) -> HTMLResponse:
    """A pipeline: its graph (nodes coloured by state, live), each node linked to its execution or
    task; approval and Stop buttons."""
    user = page_user(request)
    pipeline = visible_pipeline(request, user, ref)
    project = store_of(request).get_project_by_id(pipeline.project_id)
    return render(request, "pipeline.html", user, pipeline=pipeline, project=project,
                  final=pipeline.status in FINAL_PIPELINE_STATUSES)


@router.get("/operations/", response_class=HTMLResponse)
def operations_page(request: Request) -> HTMLResponse:
    """Administrators: machines, queues, cost now and over time, launch failures. Others: 404."""
    user = page_user(request)
    if not user.is_admin:
        raise HTTPException(404, "Not found.")
    return render(request, "operations.html", user)


@router.get("/compare/", response_class=HTMLResponse)
def compare_page(request: Request, e: Annotated[list[str] | None, Query()] = None) -> HTMLResponse:
    """Several executions side by side: parameters, latest metadata, one metric's series overlaid."""
    user = page_user(request)
    executions = [visible_execution(request, user, ref) for ref in (e or [])[:12]]
    # The way back: the project of the runs compared (picked from one project's table).
    project = store_of(request).get_project_by_id(executions[0].project_id) if executions else None
    return render(request, "compare.html", user, executions=executions, project=project)
