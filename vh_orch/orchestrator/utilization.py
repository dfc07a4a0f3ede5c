"""The hardware use of the executions this daemon runs: sampled every few seconds, stored in batches.

One periodic job (`Daemon.jobs`, every `utilization_interval_s`) takes the executions whose
commands run now (Runners.watched) and reads each place they run once for all of them
(bootstrap/usage.py): this host in the job's own thread; each remote machine with one command
over its SSH connection, a few machines at a time in a small pool, so that a slow machine delays
no other (a machine whose read from an earlier tick has not answered yet is skipped, and what
arrives late is stored with the next batch). Every sample of a tick is stored in one
transaction (store/utilization.py bounds them per execution and keeps the peak memory).

CPU is a percentage of one core over the time since the execution's previous sample (its first:
since its command started); GPUs are those the execution was given (`gpu_indices`), read only on
places where some execution has any.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vh_orch.bootstrap.gpus import GPUUse
from vh_orch.bootstrap.usage import PlaceUsage, Probe, Reading, RemoteFetch, cpu_percent, local_fetch
from vh_orch.orchestrator.store.utilization import NewSample, Tally

if TYPE_CHECKING:
    from vh_orch.bootstrap.ssh import SSHTransport
    from vh_orch.orchestrator.store import Store

log = logging.getLogger(__name__)

REMOTE_WORKERS = 8  # remote machines read at once
REMOTE_WAIT_S = 2.0  # how long a tick waits for remote answers before it stores what it has


@dataclass(frozen=True)
class Watched:
    """An execution whose command runs now, and what to read for it where."""

    execution_id: int
    attempt: int
    probe: Probe
    transport: SSHTransport | None  # its machine's connection; None: this host
    gpu_indices: tuple[int, ...] = ()


class Sampler:
    def __init__(self, store: Store, watched: Callable[[], list[Watched]]) -> None:
        self.store = store
        self._watched = watched
        self._local = PlaceUsage(local_fetch)
        self._remote: dict[SSHTransport, PlaceUsage] = {}
        self._in_flight: dict[SSHTransport, Future[None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._last: dict[tuple[int, int, Probe], tuple[Reading, float]] = {}  # the reading before, and its clock
        self._pending: list[NewSample] = []
        self._tallies: dict[int, Tally] = {}
        self._failing: set[SSHTransport | None] = set()

    def tick(self) -> None:
        """Read every place once, store what was read (the periodic job)."""
        watched = self._watched()
        places: dict[SSHTransport | None, list[Watched]] = {}
        for w in watched:
            places.setdefault(w.transport, []).append(w)
        asked = []
        for transport, items in places.items():
            if transport is None or self._busy(transport):
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(REMOTE_WORKERS, thread_name_prefix="utilization")
            future = self._pool.submit(self._read, transport, items)
            self._in_flight[transport] = future
            asked.append(future)
        if None in places:
            self._read(None, places[None])
        if asked:
            wait(asked, timeout=REMOTE_WAIT_S)
        self._store()
        self._forget(watched)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _busy(self, transport: SSHTransport) -> bool:
        future = self._in_flight.get(transport)
        return future is not None and not future.done()

    def _read(self, transport: SSHTransport | None, items: list[Watched]) -> None:
        if transport is None:
            place = self._local
        else:
            place = self._remote.get(transport) or self._remote.setdefault(transport, PlaceUsage(RemoteFetch(transport)))
        try:
            read = place.read([w.probe for w in items], gpus=any(w.gpu_indices for w in items))
        except Exception as exc:  # a machine that does not answer now: its executions miss this sample
            if transport not in self._failing:  # said once, until it answers again
                self._failing.add(transport)
                log.info("reading hardware use on %s failed: %s", "this host" if transport is None
                         else transport.target.label, exc)
            return
        self._failing.discard(transport)
        now = self.store.clock()
        samples = []
        with self._lock:
            for w in items:
                reading = read.readings.get(w.probe)
                if reading is None:  # not started yet, or already gone
                    continue
                key = (w.execution_id, w.attempt, w.probe)
                before, before_clock = self._last.get(key, (None, None))
                self._last[key] = (reading, read.clock)
                samples.append(NewSample(w.execution_id, w.attempt, now,
                                         cpu_percent(reading, read.clock, before, before_clock),
                                         reading.memory_bytes, _gpus(w.gpu_indices, read.gpus)))
            self._pending.extend(samples)

    def _store(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self.store.add_utilization(batch, self._tallies)
        except Exception as exc:  # a busy or unreachable database: these samples are skipped
            log.warning("storing %d hardware use sample(s) failed: %s", len(batch), exc)

    def _forget(self, watched: list[Watched]) -> None:
        """Drop what is remembered of executions and machines no longer watched."""
        keys = {(w.execution_id, w.attempt, w.probe) for w in watched}
        ids = {w.execution_id for w in watched}
        transports = {w.transport for w in watched}
        with self._lock:
            for key in [k for k in self._last if k not in keys]:
                del self._last[key]
            for execution_id in [i for i in self._tallies if i not in ids]:
                del self._tallies[execution_id]
        for transport in [t for t in self._remote if t not in transports and not self._busy(t)]:
            del self._remote[transport]
            self._in_flight.pop(transport, None)


def _gpus(indices: tuple[int, ...], uses: list[GPUUse] | None) -> list[dict[str, Any]] | None:
    """The use of the GPUs an execution was given; None when it has none or they could not be read."""
    if not indices or uses is None:
        return None
    return [{"index": u.index, "utilization_percent": u.utilization_percent, "memory_used_bytes": u.memory_used_bytes}
            for u in uses if u.index in indices]
