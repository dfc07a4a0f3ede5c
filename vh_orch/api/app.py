"""The FastAPI application: routers, error shapes the `vh` client prints, the store on app.state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vh_orch.api.allowlist import LOOPBACK, Network
from vh_orch.api.auth import LoginThrottle
from vh_orch.api.metrics import build_registry
from vh_orch.api.metrics import router as metrics_router
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.store import Store

if TYPE_CHECKING:
    from vh_orch.orchestrator.metrics import DaemonMetrics


def create_app(store: Store, *, metrics_allow: Sequence[Network] = LOOPBACK,
               daemon_metrics: DaemonMetrics | None = None) -> FastAPI:
    """metrics_allow: the client networks /metrics answers (`--metrics-allow`, parsed by
    api.allowlist.parse_allow); daemon_metrics: the serving daemon's own counters, if any."""
    from vh_orch.api import valohai

    app = FastAPI(title="vh-orch", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.state.store = store
    app.state.throttle = LoginThrottle()
    app.state.metrics_allow = tuple(metrics_allow)
    app.state.metrics_registry = build_registry(store, daemon_metrics)
    app.include_router(valohai.router)
    app.include_router(metrics_router)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # {"field": [{"message": ..., "code": ...}]}: what the client prints, one line per field
        fields: dict[str, list[dict[str, str]]] = {}
        for error in exc.errors():
            where = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
            fields.setdefault(".".join(where) or "non_field_errors", []).append(
                {"message": str(error.get("msg", "invalid")), "code": str(error.get("type", "invalid"))})
        return JSONResponse(fields, status_code=400)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "code": "not_found"}, status_code=404)

    @app.exception_handler(UserInputError)
    async def _bad_input(_request: Request, exc: UserInputError) -> JSONResponse:
        return JSONResponse({"message": str(exc), "code": "invalid"}, status_code=400)

    return app
