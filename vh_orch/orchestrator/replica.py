"""This process as a replica: its heartbeat row, the leases it holds, and the work of replicas that are gone.

On SQLite there is one replica per database, on PostgreSQL any number share the work through
leases (store/leases.py), each owned by a replica's heartbeat row. Each pass a replica takes the
`cluster` lease if it is free, its share of the environments' leases (all of them divided among
the live replicas), and every started execution whose owner is gone: it re-attaches to it or
settles it, as a restarted daemon does. Its heartbeat renews them all; what another replica took
meanwhile (this one was paused or cut off past its leases) is let go, runners included, without
writing anything.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from datetime import timedelta

from vh_orch.bootstrap.runtimes import Runtime
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.orchestrator.local_host import LocalHost
from vh_orch.orchestrator.models import Environment, Execution, Machine
from vh_orch.orchestrator.runners import Runners
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.core import _pid_alive
from vh_orch.orchestrator.store.database import Fence
from vh_orch.orchestrator.store.leases import CLUSTER, env_key
from vh_orch.settings import Settings
from vh_orch.values import ExecutionStatus

log = logging.getLogger(__name__)

S = ExecutionStatus


class Replica:
    def __init__(self, store: Store, settings: Settings, hostname: str, runners: Runners, local: LocalHost,
                 runtime_on: Callable[[Environment, Machine], Runtime]) -> None:
        self.store = store
        self.settings = settings
        self.hostname = hostname
        self.runners = runners
        self.local = local  # ends what executions that ran on this host left running
        self.runtime_on = runtime_on  # the runtime an execution re-attached to runs in
        self.id: int | None = None  # this process's heartbeat row: the owner of its leases
        self.cluster_fence: Fence | None = None  # the `cluster` lease, while this replica holds it
        self._env_fences: dict[int, Fence] = {}
        self._envs_taken_at = 0.0
        self._unowned_before: set[tuple[int, int]] = set()

    # -- the heartbeat ----------------------------------------------------------------

    def register(self) -> None:
        beat = self.store.register_daemon(timedelta(seconds=self.settings.heartbeat_stale_s))
        self.id = beat.id

    def stopped(self) -> None:
        """Mark the heartbeat row stopped: its leases are free for the others at once."""
        if self.id is not None:
            self.store.daemon_stopped(self.id)

    def heartbeat(self) -> None:
        """Beat, renew every lease this replica holds, and let go of what it no longer holds
        (another replica took it while this one was paused or cut off)."""
        if self.id is None:
            return
        self.store.beat(self.id)
        asked = time.monotonic()
        self._let_go(self.store.renew_leases(self.id, self.settings.lease_s), asked)

    def _let_go(self, held: set[str], asked: float) -> None:
        """What is not in `held` (the leases this replica had when it `asked`) was taken; runners
        started since then hold leases that answer did not see yet."""
        fresh = self._envs_taken_at > asked  # taken after the renewal read what this replica holds
        for env_id in [i for i, fence in list(self._env_fences.items()) if fence.key not in held and not fresh]:
            if self._env_fences.pop(env_id, None) is not None:
                log.warning("environment %s: its lease was taken by another replica", env_id)
        if self.cluster_fence is not None and CLUSTER not in held and not fresh:
            self.cluster_fence = None
        self.runners.let_go_taken(held, asked)

    def mark_dead_replicas(self) -> None:
        """Replicas of this host whose process is gone free their leases now (not when they expire)."""
        self.store.mark_dead_replicas(self.hostname, lambda pid: pid == os.getpid() or _pid_alive(pid))

    # -- the leases it takes ----------------------------------------------------------------

    def take_cluster(self) -> Fence | None:
        assert self.id is not None
        held = self.store.take_leases(self.id, [CLUSTER], self.settings.lease_s)
        self.cluster_fence = Fence(CLUSTER, self.id, held[CLUSTER]) if CLUSTER in held else None
        return self.cluster_fence

    def lose_cluster(self) -> None:
        """A cluster write found the lease gone: the replica that took it runs the cluster's jobs."""
        self.cluster_fence = None

    def take_environments(self) -> dict[int, Fence]:
        """The environments this replica reconciles this pass: those it holds, and free ones up
        to its share (all of them divided among the live replicas); a surplus is given back."""
        assert self.id is not None
        envs = [e.id for e in self.store.active_environments() if e.id is not None]
        replicas = max(1, len(self.store.replicas(timedelta(seconds=self.settings.heartbeat_stale_s))))
        share = math.ceil(len(envs) / replicas)
        mine = sorted(i for i in envs if i in self._env_fences)
        if len(mine) > share:
            surplus = mine[share:]
            self.store.release_leases(self.id, [env_key(i) for i in surplus])
            for env_id in surplus:
                self._env_fences.pop(env_id, None)
        keys = {env_key(i): i for i in envs}
        held = self.store.take_leases(self.id, keys, self.settings.lease_s, limit=share)
        fences = {keys[k]: Fence(k, self.id, token) for k, token in held.items()}
        taken = sorted(i for i in fences if i not in self._env_fences)
        if taken and self._env_fences:  # (the first environments of a replica are not news)
            log.info("reconciling environment(s) %s from now on", ", ".join(map(str, taken)))
        self._env_fences = fences
        self._envs_taken_at = time.monotonic()
        return dict(self._env_fences)

    def env_fences(self) -> dict[int, Fence]:
        """The environments this replica holds now, with their fences (as take_environments left them)."""
        return dict(self._env_fences)

    def env_fence(self, env_id: int) -> Fence | None:
        return self._env_fences.get(env_id)

    def environments(self) -> set[int]:
        """The environments this replica holds now."""
        return set(self._env_fences)

    def held_by_others(self) -> set[int]:
        """Executions another live replica runs (their containers on this host are not leftovers)."""
        return set() if self.id is None else self.store.executions_held_by_others(self.id)

    # -- the work of replicas that are gone ----------------------------------------------------

    def take_over(self) -> None:
        """Started executions whose replica is gone (stopped, its process dead, its lease expired):
        this replica takes them and re-attaches or settles them, as a restarted daemon does."""
        assert self.id is not None
        taken = []
        for execution in self.store.unowned_executions():
            assert execution.id is not None
            if self.runners.runs(execution.id):
                continue
            if self.store.take_over(execution.id, self.id, lease_s=self.settings.lease_s) is not None:
                taken.append(execution)
        if taken:
            log.info("taking over executions %s from a replica that is gone", ", ".join(str(e.id) for e in taken))
            self._settle(taken, at_start=True)

    def settle_unowned(self) -> None:
        """Executions that are started but that no runner of this daemon runs (a runner that
        could not record its end, a thread that died): settled like after a restart. Only those
        seen so in two passes in a row: after a restart, the first passes requeue what ran on
        machines that are gone (fake ones), and a runner is registered in the pass that claims."""
        owned = self.runners.ids()
        others = self.held_by_others()
        seen = {(e.id, e.attempt): e for e in self.store.executions_in([S.STARTED, S.STOPPING])
                if e.id is not None and e.id not in owned and e.id not in others}
        unowned = [e for key, e in seen.items() if key in self._unowned_before]
        self._unowned_before = set(seen)
        if unowned:
            log.warning("executions %s are started but nothing runs them; settling them",
                        ", ".join(str(e.id) for e in unowned))
            self._settle(unowned, at_start=False)

    def _settle(self, executions: list[Execution], at_start: bool) -> None:
        assert self.id is not None
        envs = {e.id: e for e in self.store.active_environments()}
        machines = {m.id: m for m in self.store.fleet()}
        for execution in executions:
            assert execution.id is not None
            env = envs.get(execution.environment_id)
            if env is not None and capabilities(env.cloud).reached_over_ssh:
                machine = machines.get(execution.machine_id)
                if machine is not None:
                    # Its container runs on, on the remote machine: follow it again.
                    log.info("re-attaching to execution %s on machine %s", execution.id, machine.id)
                    self.runners.start(execution, self.runtime_on(env, machine), self.id, reattach=True,
                                       environment=env)
                continue  # no live machine: the reconciler marks it lost and requeues
            self.local.end_leftover(execution)
            if env is not None and not capabilities(env.cloud).machine_is_this_host and at_start:
                # Its command ended with the daemon that ran it; its machine may live on (a cloud
                # shared by replicas) or not (the reconciler then finds it gone): run it again.
                self.store.requeue_lost(execution.id, execution.attempt,
                                        "the vh-orch replica that ran it stopped", env.max_attempts)
                continue
            self.store.set_status(
                execution.id,
                S.ERROR,
                "the vh-orch daemon stopped while this execution ran; it was not resumed" if at_start
                else "vh-orch lost track of this execution while it ran; it was ended",
            )
