"""The adaptive idle policy: how long an idle machine waits for work before it retires.

A rent-or-buy rule with a learned distribution. Keeping an idle machine for T more
seconds costs T machine-seconds; retiring it and needing a machine again later costs a
new boot, `boot_s` machine-seconds that are paid for while someone also waits `boot_s`
(valued at wait_weight machine-seconds per second waited: the environment's
`wait_cost_per_hour` over its `price_per_hour`, so cheap machines are kept longer than
expensive ones). Which is cheaper depends on
how soon the machine would be needed again, and that is read from the environment's
recent arrivals: the j-th idle machine in dispatch order is needed once j more
executions arrive, so the samples are the spans between an arrival and the j-th one
after it. The keep-alive T is the one that minimises the expected cost over those
samples,

    E[min(S, T)] + P(S > T) * boot_s * (1 + wait_weight),

which is 0 (retire at once) for sparse arrivals, the length of the short gaps for
bursts, and grows with the arrival rate for steady work. It never exceeds the
environment's idle_timeout, which also serves while there is too little history.
"""

from __future__ import annotations

from functools import lru_cache

MAX_WAIT_WEIGHT = 100.0
HISTORY = 256  # arrivals remembered per environment
MIN_SAMPLES = 8


def wait_weight(wait_cost_per_hour: float, price_per_hour: float) -> float:
    """Machine-seconds one second of waiting is worth."""
    if price_per_hour <= 0:
        return MAX_WAIT_WEIGHT  # free machines: keep them as long as idle_timeout allows
    return min(MAX_WAIT_WEIGHT, wait_cost_per_hour / price_per_hour)


def keep_alive_s(arrivals: tuple[float, ...], rank: int, boot_s: float, cap_s: float, weight: float = 1.0) -> float:
    """Seconds the rank-th idle machine (1: the next one work goes to) stays idle before it retires.

    arrivals: recent submission times in seconds, oldest first."""
    if len(arrivals) - rank < MIN_SAMPLES:
        return cap_s
    return min(cap_s, _best_threshold(arrivals, rank, boot_s, weight))


@lru_cache(maxsize=4096)
def _best_threshold(arrivals: tuple[float, ...], rank: int, boot_s: float, weight: float) -> float:
    spans = sorted(arrivals[i + rank] - arrivals[i] for i in range(len(arrivals) - rank))
    n = len(spans)
    cold = boot_s * (1 + weight)
    best_t, best_cost = 0.0, cold  # retire at once: every later need is a new boot
    below = 0.0  # the sum of the spans up to and including this one
    for i, span in enumerate(spans):
        below += span
        longer = n - 1 - i
        cost = (below + longer * span) / n + longer / n * cold
        if cost < best_cost:
            best_t, best_cost = span, cost
    return best_t
