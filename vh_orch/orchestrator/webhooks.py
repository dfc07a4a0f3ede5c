"""Sending webhook deliveries: a periodic job claims the due rows and hands them to a small thread pool, so
a slow or silent receiver never holds up the daemon's other work; each try's outcome is written back to
its row, which says when to try again (rows, not memory: a restart loses nothing).

A delivery is a POST of the body made when the work ended, with
- `X-Vh-Orch-Event`: the event (execution.ended, task.ended, pipeline.ended);
- `X-Vh-Orch-Event-Id`: the same on every try and for every webhook of the event: the receiver's
  de-duplication key (a try whose answer was lost is sent again);
- `X-Vh-Orch-Signature: sha256=HEX`: HMAC-SHA256 of the body with the webhook's secret (when it has one).
Any 2xx is delivered; anything else, a redirect included, or no answer is tried again after the back-off.
Webhooks made through the API (restricted) go out only to addresses the fetch policy allows. The URL is
stored encrypted (orchestrator/webhook_urls.py) and opened only here, for the try.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from vh_orch.orchestrator.webhook_urls import open_url, redact
from vh_orch.timeutil import utcnow

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store
    from vh_orch.orchestrator.store.webhooks import Due
    from vh_orch.settings import Settings

log = logging.getLogger(__name__)

# After the first, second, ... failed try: how long until the next one. Six tries over about an hour.
BACKOFF_S = (10.0, 60.0, 300.0, 900.0, 2400.0)
SEND_INTERVAL_S = 2.0  # how often due deliveries are looked for
TIMEOUT_S = 10.0  # to connect, and between bytes of the answer
HOLD_S = 120.0  # a claimed delivery is nobody else's for this long (a try takes at most ~2 timeouts)
WORKERS = 4
MAX_ERROR_CHARS = 500
USER_AGENT = "vh-orch-webhooks/1"


def next_try_at(attempts: int, now: datetime) -> datetime | None:
    """When to try again after `attempts` failed tries, or None once the schedule is spent."""
    if attempts > len(BACKOFF_S):
        return None
    return now + timedelta(seconds=BACKOFF_S[attempts - 1])


def signature(secret: bytes, body: bytes) -> str:
    """The X-Vh-Orch-Signature value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def headers_for(due: Due, secret: bytes | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Vh-Orch-Event": due.event,
               "X-Vh-Orch-Event-Id": due.event_id, "X-Vh-Orch-Delivery": str(due.id)}
    if secret:
        headers["X-Vh-Orch-Signature"] = signature(secret, due.body.encode())
    return headers


class WebhookSender:
    """Claims due deliveries and tries them in a thread pool; tick() never waits for a receiver."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="webhook")
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()

    def tick(self, store: Store) -> int:
        """Hand the due deliveries to the pool (as many as it has free workers); how many it took."""
        with self._lock:
            room = WORKERS - len(self._in_flight)
        if room <= 0:
            return 0
        taken = 0
        for one in store.claim_due_deliveries(room, HOLD_S):
            with self._lock:
                if one.id in self._in_flight:  # a receiver slower than the hold: its try is still running
                    continue
                self._in_flight.add(one.id)
            self._pool.submit(self._try, store, one)
            taken += 1
        return taken

    def close(self) -> None:
        """Stop taking work; tries in flight are left to finish (or to be claimed again after the hold)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _try(self, store: Store, due: Due) -> None:
        try:
            started = utcnow()
            code, error = self.post(due)
            attempts = due.attempts + 1
            delivered = code is not None and 200 <= code < 300
            next_at = None if delivered else next_try_at(attempts, utcnow())
            store.record_delivery_try(due.id, started, code, error, next_at)
            if not delivered:
                log.warning("webhook %d: delivery %d (%s) try %d failed: %s%s", due.webhook_id, due.id, due.event,
                            attempts, error or f"HTTP {code}",
                            "; giving up" if next_at is None else f"; next try at {next_at:%H:%M:%S}")
        except Exception:
            log.exception("webhook %d: recording delivery %d failed; it is tried again later", due.webhook_id, due.id)
        finally:
            with self._lock:
                self._in_flight.discard(due.id)

    def post(self, due: Due) -> tuple[int | None, str | None]:
        """One try: (the HTTP status, None), or (None, why there was no answer). The URL is decrypted
        here alone, and kept out of the error (it is stored, and logged)."""
        from vh_orch.keyring import KeyRing

        url = ""
        try:
            # Loaded for each try: a key put first in the key file for a rotation is used at once.
            ring = KeyRing.load(self.settings.home)
            url = open_url(due.url, ring.decrypt)
            secret = ring.decrypt(due.secret) if due.secret is not None else None
            session = self._session(due.restricted)
            with session:
                answer = session.post(url, data=due.body.encode(), headers=headers_for(due, secret),
                                      timeout=(TIMEOUT_S, TIMEOUT_S), allow_redirects=False, stream=True)
                answer.close()  # the answer's body is not read: a receiver cannot make the daemon hold it
            return answer.status_code, None if answer.status_code < 300 else f"HTTP {answer.status_code}"
        except Exception as exc:  # no answer, FetchRefused, an undecryptable value: tried again, and said why
            return None, _short(redact(f"{type(exc).__name__}: {exc}", url))

    def _session(self, restricted: bool) -> Any:
        """A session that takes nothing from the daemon's environment (proxies, netrc); for a restricted
        webhook, one whose every connection the fetch policy checks."""
        import requests

        if restricted:
            from vh_orch.storage.fetch_policy import FetchPolicy, guarded_session, parse_networks

            return guarded_session(FetchPolicy(parse_networks(self.settings.allow_fetch)))
        session = requests.Session()
        session.trust_env = False
        return session


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"
