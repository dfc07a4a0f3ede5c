"""Who asks: API tokens (`Authorization: Token ...`, or `Bearer ...`) and browser sessions; sign-in and
password changes, throttled."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from starlette.responses import Response

from vh_orch.api.throttle import LoginThrottle
from vh_orch.orchestrator.models import User
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.users import check_password, hash_password, token_digest, verify_password

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PasswordCheck:
    """What a user name and password came to: the user, or how long this name/address must wait
    (wait > 0: throttled, nothing checked), or neither (wrong, and counted as a failure)."""

    user: User | None
    wait: int = 0


def client_address(request: Request) -> str:
    """The client's address: the connection's peer, or what a trusted proxy forwarded (uvicorn's proxy
    headers middleware has already put that in request.client, and only for `--trusted-proxy`)."""
    return request.client.host if request.client else "?"


def check_password_login(request: Request, username: str, password: str) -> PasswordCheck:
    """The password check behind `POST /api/v0/get-token/`, the web sign-in and a password change,
    throttled per user name and client address (api/throttle.py); the caller decides how to answer."""
    throttle: LoginThrottle = request.app.state.throttle
    address = client_address(request)
    wait = throttle.retry_after(username, address)
    if wait > 0:
        return PasswordCheck(None, int(wait) + 1)
    user = request.app.state.store.find_user(username)
    if not verify_password(user.password_hash if user else None, password) or user is None:
        throttle.failed(username, address)
        return PasswordCheck(None)
    throttle.succeeded(username, address)
    return PasswordCheck(user)


class PasswordRefused(Exception):
    """A password change that changed nothing: which field is at fault and why (wait > 0: throttled)."""

    def __init__(self, field: str, message: str, wait: int = 0) -> None:
        super().__init__(message)
        self.field = field
        self.wait = wait


def change_password(request: Request, user: User, old_password: str, new_password: str) -> int:
    """A signed-in user's own password change: the old password is checked (and a wrong one counted like a
    failed sign-in), then every other token and session of theirs ends; the one this request came with
    stays. Returns how many ended."""
    try:
        check_password(new_password)
    except UserInputError as exc:
        raise PasswordRefused("new_password", str(exc)) from None
    signed = check_password_login(request, user.name, old_password)
    if signed.wait:
        raise PasswordRefused("old_password", f"too many failed tries: try again in {signed.wait} s", signed.wait)
    if signed.user is None or signed.user.id != user.id:
        raise PasswordRefused("old_password", "that is not your current password: nothing was changed")
    current = presented_token(request)
    store = request.app.state.store
    ended = int(store.set_password(user.name, hash_password(new_password),
                                   keep_digest=token_digest(current) if current else None))
    log.info("%s changed their password from %s; %d other token(s) and session(s) ended",
             user.name, client_address(request), ended)
    return ended


SESSION_COOKIE = "vh_orch_session"
# Over https the cookie is `__Host-` prefixed: the browser keeps it only if Secure, for Path=/ and no Domain,
# so neither a sibling subdomain nor a plain-http answer on the way can plant or overwrite it.
SECURE_SESSION_COOKIE = "__Host-vh_orch_session"
SESSION_DAYS = 14


def session_cookie_name(request: Request) -> str:
    """The session cookie's name for this request's scheme. Only this one is read: over https, a cookie
    without the prefix may have been planted (which is what the prefix prevents)."""
    return SECURE_SESSION_COOKIE if request.url.scheme == "https" else SESSION_COOKIE


def session_secret(request: Request) -> str | None:
    """The browser session's secret from its cookie, if any."""
    return request.cookies.get(session_cookie_name(request)) or None


def set_session_cookie(request: Request, response: Response, secret: str) -> None:
    response.set_cookie(session_cookie_name(request), secret, max_age=SESSION_DAYS * 86400, httponly=True,
                        samesite="lax", secure=request.url.scheme == "https", path="/")


def clear_session_cookies(response: Response) -> None:
    """Sign-out: both names go (a browser refuses a `__Host-` cookie, even an expired one, unless Secure)."""
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    response.delete_cookie(SECURE_SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session: str) -> str:
    """The CSRF token of a browser session: derived from the session's secret, so nothing more is
    stored, and a page of another site (which cannot read the cookie) cannot know it."""
    return hashlib.sha256(b"vh-orch csrf\0" + session.encode()).hexdigest()


def same_origin(request: Request) -> bool:
    """Whether a browser request comes from a page of this site: its Origin (or, lacking one, its
    Referer) is this request's own scheme and host."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer", "")
        origin = "/".join(referer.split("/", 3)[:3]) if referer else None
    return origin == own


def check_csrf(request: Request, session: str, given: str | None) -> None:
    """A state-changing request that a session cookie authenticates must come from this site and
    carry the session's CSRF token (X-CSRF-Token, or the form field `csrf`); else 403, nothing done."""
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise HTTPException(403, "Cross-site request refused: its Origin is not this site.")
    if not given or not hmac.compare_digest(given, csrf_token(session)):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again.")


def session_user(request: Request) -> User | None:
    session = session_secret(request)
    if not session:
        return None
    return request.app.state.store.user_for_token(token_digest(session))  # type: ignore[no-any-return]


def presented_token(request: Request) -> str | None:
    """The secret this request authenticates with, as current_user reads it: the Authorization header's
    token, else the session cookie's (a password change keeps this one and ends the others)."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return session_secret(request)
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() in ("token", "bearer") and value.strip() else None


def current_user(request: Request, authorization: Annotated[str | None, Header()] = None,
                 x_csrf_token: Annotated[str | None, Header()] = None) -> User:
    """Who asks: an API token in the Authorization header, or a browser's session cookie (then
    state-changing requests are CSRF-checked)."""
    session = session_secret(request)
    if authorization is None and session:
        user = session_user(request)
        if user is None:
            raise HTTPException(401, "Your session has ended: sign in again.")
        check_csrf(request, session, x_csrf_token)
        return user
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() not in ("token", "bearer") or not value.strip():
        raise HTTPException(401, "Authentication credentials were not provided.",
                            headers={"WWW-Authenticate": "Token"})
    user = request.app.state.store.user_for_token(token_digest(value.strip()))
    if user is None:
        raise HTTPException(401, "Invalid token.", headers={"WWW-Authenticate": "Token"})
    return user


CurrentUser = Annotated[User, Depends(current_user)]
