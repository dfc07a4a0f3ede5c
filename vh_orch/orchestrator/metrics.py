"""What the daemon process measures as it works: how long reconcile passes take, how many log
lines it stored, how many bytes of inputs and outputs it moved.

These live in this process's memory and start from zero with it (Prometheus' rate() and
increase() expect that of counters). What the database already knows (queues, machines,
executions, launch failures, cost) is not counted here: /metrics reads it at scrape time
(vh_orch/api/metrics.py), right whichever process wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable
from prometheus_client import CollectorRegistry, Counter, Histogram

# A pass with nothing to do takes milliseconds; one that calls a cloud API can take seconds,
# and a slow cloud or a busy database tens of seconds.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class DaemonMetrics:
    """The daemon's own counters and histogram, in a registry of their own (never the global
    one: one process may hold several daemons or apps, as the tests do)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "vh_orch_reconcile_pass_seconds", "Duration of the daemon's reconcile passes",
            buckets=RECONCILE_BUCKETS, registry=self.registry)
        self.log_lines = Counter(
            "vh_orch_log_lines", "Log lines of executions stored in the database by this daemon",
            registry=self.registry)
        self.transferred_bytes = Counter(
            "vh_orch_transferred_bytes",
            "Bytes of execution data moved: inputs fetched before a start, outputs stored after the end",
            ["kind"], registry=self.registry)
        for kind in ("input", "output"):
            self.transferred_bytes.labels(kind)  # both series exist from the start, at 0
        self.input_cache = Counter(
            "vh_orch_input_cache_files", "Input files placed for executions, found in the machine's input cache "
            "(hit) or fetched into it (miss)", ["result"], registry=self.registry)
        for result in ("hit", "miss"):
            self.input_cache.labels(result)

    def inputs_placed(self, hits: int, misses: int, fetched_bytes: int) -> None:
        """Input files placed for an execution: from the machine's cache (hits) or fetched (misses, their bytes)."""
        self.transferred_bytes.labels("input").inc(fetched_bytes)
        self.input_cache.labels("hit").inc(hits)
        self.input_cache.labels("miss").inc(misses)

    def outputs_stored(self, sizes: Iterable[int | None]) -> None:
        self.transferred_bytes.labels("output").inc(sum(int(s or 0) for s in sizes))
