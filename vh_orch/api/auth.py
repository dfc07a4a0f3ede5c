"""Who asks: API tokens (`Authorization: Token ...`, or `Bearer ...`), and login throttling."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from vh_orch.orchestrator.models import User
from vh_orch.orchestrator.users import token_digest, verify_password

# Failed logins within the window: this many for one user name, or (more: several people may share an
# address) for one client address, and logins for it wait until the oldest failure leaves the window
# (429 with Retry-After). A success clears the name's count.
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
WINDOW_S = 300.0


class LoginThrottle:
    """Failed logins per user name and per client address, in this process's memory."""

    def __init__(self, per_user: int = MAX_FAILURES_PER_USER, per_address: int = MAX_FAILURES_PER_ADDRESS,
                 window_s: float = WINDOW_S) -> None:
        self.limits = {"user": per_user, "address": per_address}
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, user: str, address: str) -> float:
        """Seconds until this name may try again from this address; 0 if now."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in (("user", user.lower()), ("address", address)):
                seen = self._prune(key, now)
                if len(seen) >= self.limits[key[0]]:
                    wait = max(wait, seen[0] + self.window_s - now)
        return wait

    def failed(self, user: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (("user", user.lower()), ("address", address)):
                self._prune(key, now).append(now)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(("user", user.lower()), None)

    def _prune(self, key: tuple[str, str], now: float) -> deque[float]:
        seen = self._failures.setdefault(key, deque())
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        return seen


@dataclass(frozen=True)
class PasswordCheck:
    """What a user name and password came to: the user, or how long this name/address must wait
    (wait > 0: throttled, nothing checked), or neither (wrong, and counted as a failure)."""

    user: User | None
    wait: int = 0


def check_password_login(request: Request, username: str, password: str) -> PasswordCheck:
    """The password check behind `POST /api/v0/get-token/` and the web sign-in, throttled per user
    name and client address; the caller decides how to answer."""
    throttle: LoginThrottle = request.app.state.throttle
    address = request.client.host if request.client else "?"
    wait = throttle.retry_after(username, address)
    if wait > 0:
        return PasswordCheck(None, int(wait) + 1)
    user = request.app.state.store.find_user(username)
    if not verify_password(user.password_hash if user else None, password) or user is None:
        throttle.failed(username, address)
        return PasswordCheck(None)
    throttle.succeeded(username)
    return PasswordCheck(user)


SESSION_COOKIE = "vh_orch_session"
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
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    return request.app.state.store.user_for_token(token_digest(session))  # type: ignore[no-any-return]


def current_user(request: Request, authorization: Annotated[str | None, Header()] = None,
                 x_csrf_token: Annotated[str | None, Header()] = None) -> User:
    """Who asks: an API token in the Authorization header, or a browser's session cookie (then
    state-changing requests are CSRF-checked)."""
    if authorization is None and request.cookies.get(SESSION_COOKIE):
        user = session_user(request)
        if user is None:
            raise HTTPException(401, "Your session has ended: sign in again.")
        check_csrf(request, request.cookies[SESSION_COOKIE], x_csrf_token)
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
