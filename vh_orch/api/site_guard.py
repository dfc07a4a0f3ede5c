"""What every answer of the HTTP server carries (pages, API, static files, errors), and which Host names it
answers to at all.

The Content-Security-Policy allows only this site's own scripts, styles, images and connections: no
inline script or style attribute, nothing from another host, and no page of another site may frame
ours (clickjacking). The pages keep to it: their scripts are static files, and scripts set styles
through the CSSOM (`node.style`), which the policy allows.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vh_orch.errors import UserInputError

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",  # swagger-ui's stylesheet draws its icons as data: SVGs
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
HOST_NAME_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
}


def parse_allowed_hosts(values: Iterable[str]) -> list[str]:
    """`serve --allowed-host`: host names (or addresses) the server answers to, without scheme or port;
    each value may list several, separated by commas. Empty: any Host, as without the setting."""
    hosts = []
    for value in values:
        for host in (part.strip().lower() for part in value.split(",")):
            if not host:
                continue
            if not (_is_address(host.strip("[]")) or HOST_NAME_RE.match(host)):
                raise UserInputError(f"--allowed-host {host!r} is not a host name: give the name (or address) "
                                     "browsers and clients use, without scheme, port or path, e.g. "
                                     "vh.example.com, 10.0.0.5 or ::1")
            hosts.append(host.strip("[]").rstrip("."))
    return hosts


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def host_name(header: str) -> str:
    """The name part of a Host header: `vh.example.com:8700` -> `vh.example.com`, `[::1]:8700` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return (header.rsplit(":", 1)[0] if header.count(":") == 1 else header).rstrip(".")


class SiteGuard:
    """ASGI middleware: refuses a Host not in `allowed_hosts` (if any are set) with 400, and puts the
    security headers on every answer that passes through it."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_name(host) not in self.allowed:
                await refuse_host(host, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def refuse_host(host: str, send: Send) -> None:
    body = json.dumps({"message": f"this server does not answer to the host name {host!r} (its operator's "
                                  "`vh-orch serve --allowed-host` lists the names it does)",
                       "code": "bad_host"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})
