"""The sign-in throttle under a flood of failed sign-ins from ever-new names and addresses: what it holds
(counts and bytes, traced) and what one failure costs, against the unbounded dict of deques it replaced.

    python bench/login_throttle.py [FAILURES]
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections import deque

from vh_orch.api.throttle import LoginThrottle


class Unbounded:
    """The throttle before: a deque per user name and per address, never forgotten."""

    def __init__(self) -> None:
        self.failures: dict[tuple[str, str], deque[float]] = {}

    def failed(self, user: str, address: str) -> None:
        now = time.monotonic()
        for key in (("user", user), ("address", address)):
            self.failures.setdefault(key, deque()).append(now)

    def tracked(self) -> int:
        return len(self.failures)


def flood(throttle: LoginThrottle | Unbounded, failures: int) -> float:
    start = time.perf_counter()
    for i in range(failures):
        throttle.failed(f"name{i}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    return time.perf_counter() - start


def run(make: type[LoginThrottle] | type[Unbounded], failures: int) -> tuple[int, int, float]:
    """Counts held and peak traced bytes (one run), and microseconds per failure (another, untraced)."""
    tracemalloc.start()
    traced = make()
    flood(traced, failures)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return traced.tracked(), peak, flood(make(), failures) / failures * 1e6


def main() -> None:
    failures = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(f"{failures} failed sign-ins, each from a new name and a new address")
    print(f"{'throttle':<28} {'counts held':>12} {'peak MiB':>9} {'us/failure':>11}")
    for name, make in (("LoginThrottle (10,000 keys)", LoginThrottle), ("unbounded (before)", Unbounded)):
        held, peak, cost = run(make, failures)
        print(f"{name:<28} {held:>12} {peak / 2**20:>9.1f} {cost:>11.1f}")


if __name__ == "__main__":
    main()
