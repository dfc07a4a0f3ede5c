"""Failed sign-ins, counted in this process's memory, so that guessing a password is slow and nobody
can lock a user out from the address they sign in from.

Three counts over a sliding window, each with its own limit: one user name from one client address
(the guesser), one address for any name (one place trying many names; higher, as several people may
share an address), and one name from every address (a guesser spread over many addresses; higher
still). A name/address pair that signed in successfully is exempt from the per-name ceiling: an attacker
elsewhere can exhaust that ceiling, but not the count of the address the user signs in from.

Memory is bounded: at most `max_keys` counts are kept (the least recently failed one is forgotten
first), each holds at most its limit of times, and counts whose failures have all left the window are
dropped as new failures arrive.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_FAILURES_PER_PAIR = 5
MAX_FAILURES_PER_ADDRESS = 20
MAX_FAILURES_PER_NAME = 100
WINDOW_S = 300.0
MAX_KEYS = 10_000
KNOWN_PAIR_S = 30 * 86400.0  # how long a successful sign-in exempts its name/address from the name ceiling

Key = tuple[str, ...]


def address_key(host: str) -> str:
    """The address a count is kept for: an IPv6 client counts as its /64 (one host usually holds a whole
    /64, so counting single addresses would give it 2**64 tries); an IPv4 address as itself."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


class LoginThrottle:
    """Failed sign-ins per (user name, address), per address and per user name, in this process's memory."""

    def __init__(self, per_pair: int = MAX_FAILURES_PER_PAIR, per_address: int = MAX_FAILURES_PER_ADDRESS,
                 per_name: int = MAX_FAILURES_PER_NAME, window_s: float = WINDOW_S, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = {"pair": per_pair, "address": per_address, "name": per_name}
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[Key, deque[float]] = OrderedDict()  # least recently failed first
        self._known: OrderedDict[Key, float] = OrderedDict()  # pairs that signed in, oldest success first
        self._lock = threading.Lock()

    def retry_after(self, user: str, address: str) -> float:
        """Seconds until this name may try again from this address; 0 if now."""
        now = self._now()
        wait = 0.0
        with self._lock:
            for key in self._keys(user, address, now):
                seen = self._live(key, now)
                if seen is not None and len(seen) >= self.limits[key[0]]:
                    wait = max(wait, seen[0] + self.window_s - now)
        return wait

    def failed(self, user: str, address: str) -> None:
        now = self._now()
        with self._lock:
            for key in self._keys(user, address, now):
                seen = self._live(key, now)
                if seen is None:
                    seen = self._failures[key] = deque(maxlen=self.limits[key[0]])
                seen.append(now)
                self._failures.move_to_end(key)
            self._forget_old(now)

    def succeeded(self, user: str, address: str) -> None:
        """A right password: this pair's count starts again, and the pair is exempt from the name ceiling."""
        now = self._now()
        pair = ("pair", user.lower(), address_key(address))
        with self._lock:
            self._failures.pop(pair, None)
            self._known[pair] = now
            self._known.move_to_end(pair)
            self._forget_old(now)

    def tracked(self) -> int:
        """How many counts and known pairs are held (what the memory bound applies to)."""
        with self._lock:
            return len(self._failures) + len(self._known)

    def _now(self) -> float:
        return self._clock()

    def _keys(self, user: str, address: str, now: float) -> list[Key]:
        name, where = user.lower(), address_key(address)
        pair = ("pair", name, where)
        keys: list[Key] = [pair, ("address", where)]
        known = self._known.get(pair)
        if known is None or known <= now - KNOWN_PAIR_S:
            keys.append(("name", name))
        return keys

    def _live(self, key: Key, now: float) -> deque[float] | None:
        """The failures of a key still in the window (None, and the key forgotten, when there are none)."""
        seen = self._failures.get(key)
        if seen is None:
            return None
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        if not seen:
            del self._failures[key]
            return None
        return seen

    def _forget_old(self, now: float) -> None:
        # The least recently failed counts come first: drop those whose failures have all left the window,
        # then, past the cap, the oldest whatever they hold (a flood of new keys must not grow memory).
        while self._failures:
            key, seen = next(iter(self._failures.items()))
            if seen and seen[-1] > now - self.window_s and len(self._failures) <= self.max_keys:
                break
            del self._failures[key]
        while self._known:
            key, when = next(iter(self._known.items()))
            if when > now - KNOWN_PAIR_S and len(self._known) <= self.max_keys:
                break
            del self._known[key]
