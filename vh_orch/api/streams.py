"""Live streams are a bounded resource: each holds a connection and polls the database, so a
user may hold at most MAX_STREAMS_PER_USER at once; the next is a 429 until one ends."""

from __future__ import annotations

import threading
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from vh_orch.api.deps import field_error

MAX_STREAMS_PER_USER = 8


class StreamSlots:
    def __init__(self, per_user: int = MAX_STREAMS_PER_USER) -> None:
        self.per_user = per_user
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()

    def take(self, user_id: int) -> None:
        """Hold one of the user's slots; a 429 naming the limit when all are held."""
        with self._lock:
            held = self._held.get(user_id, 0)
            if held >= self.per_user:
                raise field_error("non_field_errors", f"you already follow {held} live streams, the most one user "
                                  "may hold at once: close one (a browser tab showing an execution) and retry",
                                  code="too_many_streams", status=429)
            self._held[user_id] = held + 1

    def give(self, user_id: int) -> None:
        with self._lock:
            held = self._held.get(user_id, 0) - 1
            if held > 0:
                self._held[user_id] = held
            else:
                self._held.pop(user_id, None)

    def held(self, user_id: int) -> int:
        with self._lock:
            return self._held.get(user_id, 0)


class HeldStream(StreamingResponse):
    """A streaming response that gives its slot back however it ends: finished, failed, or its
    client gone (even before the first byte, when its body was never started)."""

    def __init__(self, content: Any, slots: StreamSlots, user_id: int, **kw: Any) -> None:
        super().__init__(content, **kw)
        self._slots = slots
        self._user_id = user_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give(self._user_id)
