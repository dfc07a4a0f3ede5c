"""The daemon: APScheduler jobs around a reconcile pass, a heartbeat, and runner threads.

A pass runs every few seconds and promptly when a CLI command wakes it through a
datagram on an abstract Unix socket named after the database (nothing to clean up,
no path-length limits).

A daemon is a replica: on SQLite there is one per database, on PostgreSQL any number share
the work through leases (store/leases.py). Each pass a replica takes the `cluster` lease
(admission, tasks, draining, cleanup jobs) if it is free, its share of the environments'
leases, and every started execution whose owner is gone (it re-attaches or settles it, as
after a restart). It runs what it claims under a lease of the execution's own; its heartbeat
renews them all, and a runner whose lease was taken lets go without writing anything.

This module only wires the parts that do it, each owning one job: the replica (replica.py:
heartbeat, leases, take-over), the runner threads (runners.py), machine setup
(machine_setup.py: bootstrap, pre-pull, remote sweeps and image tidying), this host
(local_host.py: runtime choice, local sweep), the hardware use sampler (utilization.py), the
webhook sender (webhooks.py: the cluster lease's holder sends the deliveries that ends queued), one
driver registry (drivers.py) for the reconciler and machine setup, and the table of periodic
jobs (`Daemon.jobs`, scheduled by jobs.py). Each part is given the store it writes through,
fenced by the lease it acts under. The daemon is the reconciler's ExecutionHost: it hands what is
dispatched to the runners and machines to set up to machine setup.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from vh_orch.bootstrap.runtimes import Runtime
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.errors import LeaseLost
from vh_orch.orchestrator.cleanup import CleanupJob, load_jobs, run_job
from vh_orch.orchestrator.drivers import Drivers
from vh_orch.orchestrator.jobs import PeriodicJob, scheduler_for
from vh_orch.orchestrator.local_host import LocalHost
from vh_orch.orchestrator.machine_setup import MachineSetup
from vh_orch.orchestrator.metrics import DaemonMetrics
from vh_orch.orchestrator.models import Environment, Execution, Machine
from vh_orch.orchestrator.pipelines.engine import PipelineEngine
from vh_orch.orchestrator.reconcile import Reconciler
from vh_orch.orchestrator.replica import Replica
from vh_orch.orchestrator.runners import Runners
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.database import Fence
from vh_orch.orchestrator.tasks.engine import TaskEngine
from vh_orch.orchestrator.utilization import Sampler
from vh_orch.orchestrator.wakeup import listen
from vh_orch.orchestrator.webhooks import SEND_INTERVAL_S, WebhookSender
from vh_orch.settings import Settings
from vh_orch.values import ExecutionStatus

log = logging.getLogger(__name__)

S = ExecutionStatus
SWEEP_INTERVAL_S = 30.0  # how often this host's engine is searched for containers nobody runs
TIDY_IMAGES_INTERVAL_S = 600.0  # how often machines' disks are looked at (images removed when low)
# With no work anywhere (Store.has_work), a whole pass this often; between them each interval asks
# that one question instead (work written by another replica or process is still seen at once).
QUIET_PASS_S = 5.0
UPKEEP_S = 0.5  # the least time between two passes' upkeep (see reconcile_pass)
# The least time between two cluster passes (tasks, pipelines, admission) when only the ends of
# children of tasks with every child made woke the daemon (Daemon._runner_ended): a burst of them
# dispatches in back-to-back passes, and their tasks are looked at this often. Any other wake-up (a
# submission, a pipeline node's end) runs it at once.
CLUSTER_EVERY_S = 0.25


class Daemon:
    def __init__(self, settings: Settings, store: Store, metrics: DaemonMetrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or DaemonMetrics()
        self.hostname = socket.gethostname()
        self.cluster_id = store.cluster_id()
        self._wake = threading.Event()
        self._passing = False  # a reconcile job runs its passes (guarded by _pass_lock)
        self._pass_lock = threading.Lock()
        self._stopping = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._listener: threading.Thread | None = None
        self._quiet = False  # the last pass found no work
        self._passed_at = 0.0  # when it ended (monotonic)
        self._upkept_at = -UPKEEP_S  # when a pass last did the upkeep (monotonic)
        self._projects: dict[int, Any] = {}  # this pass's projects and secrets (see run_execution)
        self._clustered_at = -CLUSTER_EVERY_S  # when a pass last ran the cluster pass (monotonic)
        self._cluster_due = True  # something besides runners ending woke the daemon since the last one
        self._cluster_owed = False  # the last pass put the cluster pass off
        self.drivers = Drivers(self.cluster_id)  # one per process: the reconciler's and machine setup's
        self.local = LocalHost(store, settings, self.cluster_id)
        self.machines = MachineSetup(store, self.drivers, self.cluster_id, wake=self._wake_now)
        self.runners = Runners(store, settings, self.cluster_id, self.metrics, wake=self._runner_ended)
        self.replica = Replica(store, settings, self.hostname, self.runners, self.local, self._runtime_on)
        self.sampler = Sampler(store, self.runners.watched)
        self.webhooks = WebhookSender(settings)

    @cached_property
    def tasks(self) -> TaskEngine:
        return TaskEngine(self.store)

    @cached_property
    def pipelines(self) -> PipelineEngine:
        return PipelineEngine(self.store, self.settings)

    @cached_property
    def reconciler(self) -> Reconciler:
        return Reconciler(self.store, self, hostname=self.hostname, runtime_name=self._runtime_name,
                          orphan_grace_s=self.settings.orphan_grace_s, drivers=self.drivers,
                          host_gpus=self.local.gpus, lease_s=self.settings.lease_s)

    def jobs(self) -> list[PeriodicJob]:
        """Every periodic job of the daemon with its interval; a new one goes here."""
        s = self.settings
        return [
            PeriodicJob("reconcile", self._reconcile_job, every_s=s.reconcile_interval_s, at_start=True),
            PeriodicJob("heartbeat", self._heartbeat_job, every_s=min(s.heartbeat_interval_s, s.lease_s / 4)),
            PeriodicJob("sweep", self._sweep_local, every_s=SWEEP_INTERVAL_S),
            PeriodicJob("images", self._tidy_images, every_s=TIDY_IMAGES_INTERVAL_S),
            PeriodicJob("webhooks", self._webhooks_job, every_s=SEND_INTERVAL_S),
            *([PeriodicJob("utilization", self.sampler.tick, every_s=s.utilization_interval_s)]
              if s.utilization_interval_s else []),
            *(PeriodicJob(f"cleanup-{job.job}", self._cleanup_job, cron=job.cron, args=(job,))
              for job in load_jobs(s)),
        ]

    # -- lifecycle --------------------------------------------------------------

    def claim(self) -> None:
        """Register this replica (on SQLite: refused while another daemon lives), before anything
        else starts; `start` claims if this was not called."""
        load_jobs(self.settings)  # a broken daemon.yaml stops the start, before anything else
        self.replica.register()

    def start(self) -> None:
        if self.replica.id is None:
            self.claim()
        self._recover()
        scheduler = scheduler_for(self.jobs())
        scheduler.start()
        self._scheduler = scheduler
        self._listener = threading.Thread(target=listen, args=(self.settings, self._stopping, self._wake_now),
                                          name="wakeup-listener", daemon=True)
        self._listener.start()
        log.info("vh-orch daemon started (pid heartbeat %s)", self.replica.id)

    def run_once(self) -> None:
        """One pass for cron: start what is queued, wait for those executions to end."""
        self.replica.register()
        try:
            self._recover()
            self.reconcile_pass()
            interval = self.settings.utilization_interval_s
            sampled = 0.0
            while self.runners.reap():
                self._heartbeat_job()
                if interval and time.monotonic() - sampled >= interval:
                    sampled = time.monotonic()
                    self.sampler.tick()
                self._stopping.wait(0.5)
                if self._stopping.is_set():
                    self.runners.stop_all("the daemon shut down")
        finally:
            self.replica.stopped()

    def shutdown(self) -> None:
        """Stop scheduling, stop running executions (outputs are kept), mark the heartbeat stopped."""
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
        self.runners.stop_all("the daemon shut down")
        self.sampler.close()
        self.webhooks.close()
        self.replica.stopped()
        log.info("vh-orch daemon stopped")

    def _recover(self) -> None:
        """Clean up after a daemon that died while it ran executions.

        Every container of this installation on this host's engine that no other live replica
        runs is a leftover now (this daemon runs nothing yet): removed. What the dead daemon
        ran is taken over (see Replica.take_over): Executions on remote machines are re-attached;
        those on this host cannot be resumed: their commands are ended (so that nothing runs
        twice), those on `local` end in `error`, those on fake machines are requeued by the
        reconciler, which finds their instances gone. Remote machines are swept too.
        """
        self.replica.mark_dead_replicas()
        self._sweep_local()
        self.replica.take_over()
        self.machines.sweep_all()

    def _wake_now(self) -> bool:
        """A pass now (and one more after a pass that runs); False once the scheduler refuses (shut down).
        While the reconcile job runs, the flag alone does it (the job passes again when it is set): a
        burst of runners ending costs no scheduler round trip each."""
        self._cluster_due = True
        return self._pass_now()

    def _runner_ended(self, execution: Execution) -> bool:
        """A runner's machine is free: a pass now, to dispatch. The cluster pass waits its turn
        (CLUSTER_EVERY_S) only for a child of a task with every child made: a pipeline's node, a
        plain execution (a quota slot freed) or a task that makes more children goes on at once."""
        if execution.task_id is None or execution.task_id not in self.tasks.all_made:
            self._cluster_due = True
        return self._pass_now()

    def _pass_now(self) -> bool:
        with self._pass_lock:
            self._wake.set()
            if self._passing:
                return not self._stopping.is_set()
        scheduler = self._scheduler
        if scheduler is not None and not self._stopping.is_set():
            try:
                scheduler.modify_job("reconcile", next_run_time=datetime.now(UTC))
            except Exception:  # shutting down
                return False
        return True

    # -- the periodic jobs (see jobs()) ----------------------------------------------

    def _reconcile_job(self) -> None:
        if self._quiet and not self._wake.is_set() and time.monotonic() - self._passed_at < QUIET_PASS_S:
            try:
                if not self.store.has_work():
                    return
            except Exception:
                log.exception("could not look for work; a whole pass instead")
        # A wake-up that arrives during a pass causes one more pass right away.
        with self._pass_lock:
            self._passing = True
        try:
            for _ in range(10):
                self._wake.clear()
                try:
                    self.reconcile_pass(throttled=True)
                except Exception:
                    log.exception("reconcile pass failed; the next one will retry")
                    return
                with self._pass_lock:
                    if not self._wake.is_set() or self._stopping.is_set():
                        self._passing = False
                        return
        finally:
            with self._pass_lock:
                again = self._passing and self._wake.is_set()  # woken during the last of ten passes
                self._passing = False
        if again:
            self._wake_now()
        elif self._cluster_owed:  # a cluster pass was put off: it runs when its turn comes, not a second later
            self._pass_at(self._clustered_at + CLUSTER_EVERY_S)

    def _pass_at(self, when: float) -> None:
        """A pass at `when` (time.monotonic()), if none comes before."""
        scheduler = self._scheduler
        if scheduler is None or self._stopping.is_set():
            return
        try:
            scheduler.modify_job("reconcile", next_run_time=datetime.now(UTC)
                                 + timedelta(seconds=max(0.0, when - time.monotonic())))
        except Exception:  # shutting down
            pass

    def _heartbeat_job(self) -> None:
        self.replica.heartbeat()

    def _sweep_local(self) -> None:
        # Another replica's containers on this host are not leftovers.
        self.local.sweep(lambda: self.runners.ids() | self.replica.held_by_others())

    def _tidy_images(self) -> None:
        self.machines.tidy_images(self.replica.environments())

    def _webhooks_job(self) -> None:
        fence = self.replica.cluster_fence
        if fence is None:
            return  # the replica that holds the cluster jobs sends them
        try:
            self.webhooks.tick(self.store.fenced(fence))
        except LeaseLost as exc:
            log.warning("%s", exc)

    def _cleanup_job(self, job: CleanupJob) -> None:
        fence = self.replica.cluster_fence
        if job.job != "scratch" and fence is None:
            return  # the replica that holds the cluster jobs runs it; scratch folders are each host's own
        removed = run_job(job, self.store.fenced(fence), self.settings)
        if removed:
            log.info("cleanup %s removed %d item(s)", job.job, len(removed))

    # -- the pass -------------------------------------------------------------------

    def reconcile_pass(self, throttled: bool = False) -> None:
        """Admit, dispatch and scale (the cluster's jobs and the reconciler), and, at most every UPKEEP_S,
        the upkeep: take leases, take over and settle what nobody runs, stop what was asked to stop.
        A burst of wake-ups (runners ending one after another) makes passes back to back: the upkeep
        and (in the daemon's own passes, `throttled`) the cluster pass then wait their turn, unless
        something else woke the daemon (CLUSTER_EVERY_S), and what a pass costs goes to dispatching."""
        with self.metrics.reconcile_seconds.time():  # a pass that fails is timed too
            self._projects.clear()
            self.runners.reap()
            upkeep = self._stopping.is_set() or time.monotonic() - self._upkept_at >= UPKEEP_S
            if not self._stopping.is_set():
                if self.replica.id is None:  # a pass without `serve` (tests, tools): this process owns all
                    self.replica.register()
                if upkeep:
                    self._upkept_at = time.monotonic()
                    self.replica.mark_dead_replicas()
                    cluster = self.replica.take_cluster()
                    owned = self.replica.take_environments()
                else:  # the leases taken at the last upkeep (the heartbeat renews them)
                    cluster, owned = self.replica.cluster_fence, self.replica.env_fences()
                now = time.monotonic()
                self._cluster_owed = False
                if cluster is not None and (not throttled or upkeep or self._cluster_due
                                            or now - self._clustered_at >= CLUSTER_EVERY_S):
                    self._cluster_due = False
                    self._clustered_at = now
                    self._cluster_pass(self.store.fenced(cluster))
                elif cluster is not None:
                    self._cluster_owed = True
                self.reconciler.run_pass(owned)
                if upkeep:
                    self.replica.take_over()
                    self.replica.settle_unowned()
            if upkeep:
                self.runners.stop_requested(self.store.executions_in([S.STOPPING]))
            self._quiet = not self.reconciler.last_actions and not self.runners.ids() and not self.store.has_work()
            self._passed_at = time.monotonic()

    def _cluster_pass(self, cluster: Store) -> None:
        """The work of the replica that holds the `cluster` lease, written through its fence."""
        try:
            self.pipelines.run_pass(cluster)  # first: the executions and tasks its nodes start
            self.tasks.run_pass(cluster)  # then: the children it adds are dispatched in this pass
            cluster.admit_created()
            cluster.finish_drained()
        except LeaseLost as exc:
            log.warning("%s", exc)
            self.replica.lose_cluster()

    # -- the ExecutionHost the reconciler dispatches to -------------------------------

    def run_execution(self, execution: Execution, env: Environment, machine: Machine,
                      fence: Fence | None = None) -> None:
        """Run a dispatched execution in a thread of this daemon: here (local, fake) or over SSH, under
        its lease (`fence`: the one its claim took; None: read)."""
        assert self.replica.id is not None
        # A pass dispatches many of a project's executions at once: its project and secrets are read
        # once a pass, not by each runner.
        project = self._projects.get(execution.project_id)
        if project is None:
            try:
                project = self._projects[execution.project_id] = self.store.project_with_secrets(execution.project_id)
            except Exception:  # the runner reads them itself (and says what failed)
                log.exception("execution %s: could not read its project for its runner", execution.id)
        self.runners.start(execution, self._runtime_on(env, machine), self.replica.id, environment=env,
                           fence=fence, project=project)

    def bootstrap(self, env: Environment, machine: Machine) -> None:
        """Set a machine up over SSH in a thread of its own (once at a time per machine), under its
        environment's lease."""
        assert env.id is not None
        self.machines.bootstrap(env, machine, self.store.fenced(self.replica.env_fence(env.id)))

    def abandon(self, execution_ids: list[int], reason: str) -> None:
        self.runners.abandon(execution_ids, reason)

    def _runtime_on(self, env: Environment, machine: Machine) -> Runtime:
        if capabilities(env.cloud).runs_on_this_host:
            return self.local.runtime_for(env)
        return self.machines.remote_runtime(env, machine)

    def _runtime_name(self, env: Environment) -> str:
        return self.local.runtime_for(env).name if capabilities(env.cloud).runs_on_this_host else "docker"
