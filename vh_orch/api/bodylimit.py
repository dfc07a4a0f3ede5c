"""Request bodies are bounded before any parser holds them.

FastAPI reads a JSON body whole into memory, and Starlette's form parser keeps up to 1,000
text fields of up to 1 MiB each: one request could hold a gigabyte. Every route's body is
capped here, as it arrives: a form (sign-in, get-token, new project, sign-out: a few short
fields) at MAX_FORM_BYTES, anything else at MAX_BODY_BYTES. The package upload is the one
exception: it streams its body to disk under its own cap (`vh-orch serve --max-upload-mb`)
and bounds its text fields itself (api/multipart.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_FORM_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")


def _too_large(limit: int, what: str) -> dict[str, Any]:
    shown = f"{limit // 1024} KiB" if limit < 1024 * 1024 else f"{limit // (1024 * 1024)} MiB"
    return {"non_field_errors": [{"message": f"the request body is larger than {shown}, the limit for {what}",
                                  "code": "too_large"}]}


class BodyLimit:
    """ASGI middleware: a body past its route's bound is a 413, refused by its declared length at
    once, or as soon as the bytes received pass the bound."""

    def __init__(self, app: ASGIApp, exempt: Callable[[str], bool]) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        form = headers.get(b"content-type", b"").lower().startswith(FORM_TYPES)
        limit, what = (MAX_FORM_BYTES, "a form") if form else (MAX_BODY_BYTES, "a request")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse(_too_large(limit, what), status_code=413)(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large(limit, what))  # type: ignore[arg-type]
            return message

        await self.app(scope, bounded, send)
