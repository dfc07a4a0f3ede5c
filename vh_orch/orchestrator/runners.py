"""The executions this process runs: one ExecutionRunner each, on a worker thread (Workers).

A runner starts only under its execution's lease (another replica may hold it) and writes through
a store fenced by it; when the heartbeat finds that lease taken, the runner lets go without
writing anything. At shutdown, runners on this host are stopped (their outputs are kept) and those
on remote machines are only detached: their containers run on, and the next daemon re-attaches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vh_orch.bootstrap.runtimes import Runtime
from vh_orch.orchestrator.metrics import DaemonMetrics
from vh_orch.orchestrator.models import Environment, Execution
from vh_orch.orchestrator.runner import ExecutionRunner
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.database import Fence
from vh_orch.orchestrator.store.leases import exec_key
from vh_orch.orchestrator.utilization import Watched
from vh_orch.orchestrator.workers import Workers
from vh_orch.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Running:
    runner: ExecutionRunner
    done: threading.Event
    remote: bool = False
    since: float = 0.0  # time.monotonic() when it was registered


class Runners:
    def __init__(self, store: Store, settings: Settings, cluster_id: str, metrics: DaemonMetrics,
                 wake: Callable[[Execution], object]) -> None:
        self.store = store
        self.settings = settings
        self.cluster_id = cluster_id
        self.metrics = metrics
        self._wake = wake  # a pass now: a runner that ends (of this execution) frees its machine
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._workers = Workers()

    def start(self, execution: Execution, runtime: Runtime, owner: int, reattach: bool = False,
              environment: Environment | None = None, fence: Fence | None = None,
              project: tuple[Any, Sequence[Any]] | None = None) -> None:
        """Run an execution on a worker thread, under its lease that `owner` (this replica) holds.
        environment: its environment's row, when the caller has it (else the runner reads it);
        fence: its lease's, when the caller just took it (else its token is read); project: its
        project and secrets (Store.project_with_secrets), when the caller has them."""
        assert execution.id is not None
        if fence is None:
            token = self.store.lease_token(exec_key(execution.id), owner)
            if token is None:
                log.warning("execution %s: not started here, another replica holds it", execution.id)
                return
            fence = Fence(exec_key(execution.id), owner, token)
        store = self.store.fenced(fence)
        runner = ExecutionRunner(store, self.settings, execution, runtime, self.cluster_id, reattach=reattach,
                                 metrics=self.metrics, environment=environment, project=project)
        done = threading.Event()

        def run() -> None:
            try:
                runner.run()
            finally:
                done.set()
            self._wake(execution)  # its machine is free: a pass now dispatches or marks it idle

        with self._lock:
            self._running[execution.id] = _Running(runner, done, remote=hasattr(runtime, "attach"),
                                                   since=time.monotonic())
        self._workers.submit(run, f"execution-{execution.id}")

    def ids(self) -> set[int]:
        """The executions a runner of this process runs (or ran, until reaped)."""
        with self._lock:
            return set(self._running)

    def watched(self) -> list[Watched]:
        """The executions whose commands run now, for the utilisation sampler."""
        with self._lock:
            items = list(self._running.items())
        found = []
        for execution_id, item in items:
            probe = item.runner.usage_probe()
            if probe is not None:
                e = item.runner.execution
                found.append(Watched(execution_id, e.attempt, probe[0], probe[1], tuple(e.gpu_indices or ())))
        return found

    def runs(self, execution_id: int) -> bool:
        with self._lock:
            return execution_id in self._running

    def let_go_taken(self, held: set[str], asked: float) -> None:
        """Runners whose execution's lease is not in `held` (the leases this replica had when it
        `asked`) let go: another replica took it. Runners started since then hold leases that answer
        did not see yet."""
        with self._lock:
            lost = [(i, item) for i, item in self._running.items()
                    if exec_key(i) not in held and item.since < asked
                    and not (item.runner.settled or item.runner.lost) and not item.done.is_set()]
        for execution_id, item in lost:
            log.warning("execution %s: its lease was taken by another replica; letting it go", execution_id)
            item.runner.let_go()

    def stop_requested(self, executions: list[Execution]) -> None:
        """Stop the runners of executions someone asked to stop (`stopping`)."""
        reasons = {e.id: e.status_reason or "stopped by request" for e in executions}
        with self._lock:
            asked = [(item, reasons[i]) for i, item in self._running.items() if i in reasons]
        for item, reason in asked:
            item.runner.stop(reason)

    def abandon(self, execution_ids: list[int], reason: str) -> None:
        with self._lock:
            items = [self._running[i] for i in execution_ids if i in self._running]
        for item in items:
            item.runner.abandon(reason)

    def stop_all(self, reason: str) -> None:
        with self._lock:
            running = list(self._running.values())
        for item in running:
            if item.remote:
                item.runner.detach()  # it runs on by itself; the next daemon re-attaches
            else:
                item.runner.stop(reason)
        for item in running:
            item.done.wait(timeout=self.settings.stop_grace_s + 60)
        self.reap()

    def reap(self) -> int:
        """Forget finished runners; returns how many still run."""
        with self._lock:
            for execution_id, item in list(self._running.items()):
                if item.done.is_set():
                    del self._running[execution_id]
            return len(self._running)
