"""The FastAPI application: routers, error shapes the `vh` client prints, the store on app.state."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vh_orch.api.allowlist import LOOPBACK, Network
from vh_orch.api.bodylimit import BodyLimit
from vh_orch.api.metrics import build_registry
from vh_orch.api.metrics import router as metrics_router
from vh_orch.api.site_guard import SECURITY_HEADERS, SiteGuard
from vh_orch.api.streams import StreamSlots
from vh_orch.api.throttle import LoginThrottle
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings
from vh_orch.storage.packages import DEFAULT_MAX_MEMBERS

if TYPE_CHECKING:
    from vh_orch.orchestrator.metrics import DaemonMetrics

log = logging.getLogger(__name__)


DEFAULT_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024


def create_app(store: Store, settings: Settings, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_package_files: int = DEFAULT_MAX_MEMBERS, metrics_allow: Sequence[Network] = LOOPBACK,
               daemon_metrics: DaemonMetrics | None = None, allowed_hosts: Sequence[str] = ()) -> FastAPI:
    """metrics_allow: the client networks /metrics answers (`--metrics-allow`, parsed by
    api.allowlist.parse_allow); daemon_metrics: the serving daemon's own counters, if any;
    allowed_hosts: the Host names answered (`--allowed-host`, parsed by api.site_guard; empty: any)."""
    from vh_orch.api import approvals, commits, data, datasets, executions, operations, pipelines, projects, tasks
    from vh_orch.api import repos as repos_api
    from vh_orch.api import webhooks

    # /api/docs is a page of web/pages.py: swagger-ui vendored, no inline script (FastAPI's own loads it from a CDN)
    app = FastAPI(title="vh-orch", docs_url=None, openapi_url="/api/openapi.json", redoc_url=None,
                  description="vh-orch's HTTP API: the part of Valohai's API the `vh` client uses, and vh-orch's "
                              "own endpoints. Authenticate with `Authorization: Token <token>`.")
    app.state.store = store
    app.state.settings = settings
    app.state.max_upload_bytes = max_upload_bytes
    app.state.max_package_members = max_package_files
    app.state.streams = StreamSlots()
    # The package upload streams to disk under its own cap; every other body is bounded here.
    app.add_middleware(BodyLimit, exempt=commits.is_upload_path)
    app.state.throttle = LoginThrottle()
    app.state.metrics_allow = tuple(metrics_allow)
    app.state.metrics_registry = build_registry(store, daemon_metrics)
    for module in (projects, commits, executions, tasks, pipelines, approvals, data, datasets, operations):
        app.include_router(module.router)
    app.include_router(repos_api.router)  # a project's deploy key: its owner's alone
    app.include_router(webhooks.router)
    app.include_router(metrics_router)
    from vh_orch.api import secrets as secrets_api

    app.include_router(secrets_api.router)

    from fastapi.staticfiles import StaticFiles

    from vh_orch.web import pages

    app.include_router(pages.router)
    from vh_orch.web import secrets_page

    app.include_router(secrets_page.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    app.add_exception_handler(pages.SignIn, pages.sign_in_redirect)
    app.add_middleware(SiteGuard, allowed_hosts=tuple(allowed_hosts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and pages.is_page_request(request):
            return pages.not_found_page(request)
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # {"field": [{"message": ..., "code": ...}]}: what the client prints, one line per field. A value
        # that fits none of a union's types fails once per type: the first failure speaks for it.
        fields: dict[str, list[dict[str, str]]] = {}
        for error in exc.errors():
            where = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
            field = where[0] if where else "non_field_errors"
            if field in fields:
                continue
            inner = f"{where[1]}: " if len(where) > 1 else ""
            fields[field] = [{"message": inner + str(error.get("msg", "invalid")),
                              "code": str(error.get("type", "invalid"))}]
        return JSONResponse(fields, status_code=400)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        if pages.is_page_request(request):
            return pages.not_found_page(request)
        return JSONResponse({"detail": str(exc), "code": "not_found"}, status_code=404)

    @app.exception_handler(UserInputError)
    async def _bad_input(_request: Request, exc: UserInputError) -> JSONResponse:
        return JSONResponse({"message": str(exc), "code": "invalid"}, status_code=400)

    @app.exception_handler(Exception)
    async def _crashed(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed")
        # answered outside the middleware (Starlette's outermost layer): the headers are added here
        return JSONResponse({"message": f"internal error ({type(exc).__name__}); see the daemon's log",
                             "code": "internal"}, status_code=500, headers=SECURITY_HEADERS)

    return app
