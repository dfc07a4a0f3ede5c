"""Who asks: API tokens (`Authorization: Token ...`, or `Bearer ...`), and login throttling."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from vh_orch.orchestrator.models import User
from vh_orch.orchestrator.users import token_digest

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


def current_user(request: Request, authorization: Annotated[str | None, Header()] = None) -> User:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() not in ("token", "bearer") or not value.strip():
        raise HTTPException(401, "Authentication credentials were not provided.",
                            headers={"WWW-Authenticate": "Token"})
    user = request.app.state.store.user_for_token(token_digest(value.strip()))
    if user is None:
        raise HTTPException(401, "Invalid token.", headers={"WWW-Authenticate": "Token"})
    return user


CurrentUser = Annotated[User, Depends(current_user)]
