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
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from vh_orch import failpoints
from vh_orch.bootstrap.runtimes import (
    DockerRuntime,
    ProcessRuntime,
    Runtime,
    RuntimeFailure,
    container_name,
    docker_available,
    kill_leftover_process,
    local_containers,
    remove_container,
)
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.errors import ConfigError, LeaseLost
from vh_orch.orchestrator.cleanup import CleanupJob, load_jobs, run_job
from vh_orch.orchestrator.drivers import Drivers
from vh_orch.orchestrator.metrics import DaemonMetrics
from vh_orch.orchestrator.models import Environment, Execution, Machine
from vh_orch.orchestrator.reconcile import Reconciler
from vh_orch.orchestrator.runner import ExecutionRunner
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.core import _pid_alive
from vh_orch.orchestrator.store.database import Fence
from vh_orch.orchestrator.store.leases import CLUSTER, env_key, exec_key
from vh_orch.orchestrator.tasks.engine import TaskEngine
from vh_orch.orchestrator.wakeup import wakeup_address
from vh_orch.settings import Settings
from vh_orch.values import ExecutionStatus

if TYPE_CHECKING:
    from vh_orch.bootstrap.remote import RemoteDockerRuntime

log = logging.getLogger(__name__)

S = ExecutionStatus
RUNTIME_PROBE_TTL_S = 30.0
PREPULL_IMAGES = 3  # images a new machine pulls while it is set up
PREPULL_TIMEOUT_S = 900  # for each of them
RUNTIMES = ("auto", "docker", "process")
SWEEP_INTERVAL_S = 30.0  # how often this host's engine is searched for containers nobody runs
TIDY_IMAGES_INTERVAL_S = 600.0  # how often machines' disks are looked at (images removed when low)


def choose_runtime(env: Environment) -> tuple[str, str]:
    """The runtime an environment that runs on this host uses now, and why."""
    wanted = settings_of(env).wanted_runtime
    if wanted == "process":
        return "process", "the environment's runtime is set to process"
    ok, why = docker_available()
    if wanted == "docker":
        return "docker", why if ok else f"set to docker, but {why}"
    return ("docker", why) if ok else ("process", f"no Docker engine: {why}")


@dataclass
class _Running:
    runner: ExecutionRunner
    thread: threading.Thread
    environment_id: int
    remote: bool = False
    since: float = 0.0  # time.monotonic() when it was registered


class Daemon:
    def __init__(self, settings: Settings, store: Store, metrics: DaemonMetrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or DaemonMetrics()
        self.hostname = socket.gethostname()
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._heartbeat_id: int | None = None
        self._runtime_cache: dict[tuple[object, ...], tuple[float, str]] = {}
        self._scheduler: BackgroundScheduler | None = None
        self._reconciler: Reconciler | None = None
        self._tasks: TaskEngine | None = None
        self._bootstrapping: set[int] = set()
        self._listener: threading.Thread | None = None
        self.cluster_id = store.cluster_id()
        self.drivers = Drivers(self.cluster_id)  # one per process: the reconciler's and machine setup's
        self._unowned_before: set[tuple[int, int]] = set()
        self.replica: int | None = None  # this process's heartbeat row: the owner of its leases
        self._env_fences: dict[int, Fence] = {}
        self._cluster_fence: Fence | None = None
        self._envs_taken_at = 0.0

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        load_jobs(self.settings)  # a broken daemon.yaml stops the start, before anything else
        self._register()
        self._recover()
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
        scheduler.add_job(
            self._reconcile_job,
            "interval",
            seconds=self.settings.reconcile_interval_s,
            id="reconcile",
            next_run_time=datetime.now(UTC),
            misfire_grace_time=None,
        )
        scheduler.add_job(
            self._heartbeat_job,
            "interval",
            seconds=min(self.settings.heartbeat_interval_s, self.settings.lease_s / 4),
            id="heartbeat",
            misfire_grace_time=None,
        )
        scheduler.add_job(self._sweep_local, "interval", seconds=SWEEP_INTERVAL_S, id="sweep",
                          misfire_grace_time=None)
        scheduler.add_job(self._tidy_images, "interval", seconds=TIDY_IMAGES_INTERVAL_S, id="images",
                          misfire_grace_time=None)
        for job in load_jobs(self.settings):
            scheduler.add_job(
                self._cleanup_job, CronTrigger.from_crontab(job.cron, timezone=UTC), args=[job],
                id=f"cleanup-{job.job}", misfire_grace_time=None,
            )
        scheduler.start()
        self._scheduler = scheduler
        self._listener = threading.Thread(target=self._listen, name="wakeup-listener", daemon=True)
        self._listener.start()
        log.info("vh-orch daemon started (pid heartbeat %s)", self._heartbeat_id)

    def run_once(self) -> None:
        """One pass for cron: start what is queued, wait for those executions to end."""
        self._register()
        try:
            self._recover()
            self.reconcile_pass()
            while self._reap():
                self._heartbeat_job()
                self._stopping.wait(0.5)
                if self._stopping.is_set():
                    self._stop_all("the daemon shut down")
        finally:
            self.store.daemon_stopped(self._heartbeat_id)  # type: ignore[arg-type]

    def _register(self) -> None:
        beat = self.store.register_daemon(timedelta(seconds=self.settings.heartbeat_stale_s))
        self._heartbeat_id = self.replica = beat.id

    def shutdown(self) -> None:
        """Stop scheduling, stop running executions (outputs are kept), mark the heartbeat stopped."""
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
        self._stop_all("the daemon shut down")
        if self._heartbeat_id is not None:
            self.store.daemon_stopped(self._heartbeat_id)
        log.info("vh-orch daemon stopped")

    def _stop_all(self, reason: str) -> None:
        with self._lock:
            running = list(self._running.values())
        for item in running:
            if item.remote:
                item.runner.detach()  # it runs on by itself; the next daemon re-attaches
            else:
                item.runner.stop(reason)
        for item in running:
            item.thread.join(timeout=self.settings.stop_grace_s + 60)
        self._reap()

    # -- jobs ---------------------------------------------------------------------

    def _cleanup_job(self, job: CleanupJob) -> None:
        if job.job != "scratch" and self._cluster_fence is None:
            return  # the replica that holds the cluster jobs runs it; scratch folders are each host's own
        removed = run_job(job, self.store.fenced(self._cluster_fence), self.settings)
        if removed:
            log.info("cleanup %s removed %d item(s)", job.job, len(removed))

    def _heartbeat_job(self) -> None:
        """Beat, renew every lease this replica holds, and let go of what it no longer holds
        (another replica took it while this one was paused or cut off)."""
        if self.replica is None:
            return
        self.store.beat(self.replica)
        asked = time.monotonic()
        self._let_go(self.store.renew_leases(self.replica, self.settings.lease_s), asked)

    def _let_go(self, held: set[str], asked: float) -> None:
        """What is not in `held` (the leases this replica had when it `asked`) was taken; runners
        started since then hold leases that answer did not see yet."""
        fresh = self._envs_taken_at > asked  # taken after the renewal read what this replica holds
        for env_id in [i for i, fence in list(self._env_fences.items()) if fence.key not in held and not fresh]:
            if self._env_fences.pop(env_id, None) is not None:
                log.warning("environment %s: its lease was taken by another replica", env_id)
        if self._cluster_fence is not None and CLUSTER not in held and not fresh:
            self._cluster_fence = None
        with self._lock:
            lost = [(i, item) for i, item in self._running.items()
                    if exec_key(i) not in held and item.since < asked
                    and not (item.runner.settled or item.runner.lost) and item.thread.is_alive()]
        for execution_id, item in lost:
            log.warning("execution %s: its lease was taken by another replica; letting it go", execution_id)
            item.runner.let_go()

    def _reconcile_job(self) -> None:
        # A wake-up that arrives during a pass causes one more pass right away.
        for _ in range(10):
            self._wake.clear()
            try:
                self.reconcile_pass()
            except Exception:
                log.exception("reconcile pass failed; the next one will retry")
                return
            if not self._wake.is_set() or self._stopping.is_set():
                return

    def _listen(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(wakeup_address(self.settings))
            except OSError as exc:
                log.warning("no prompt wake-ups (cannot bind the wake-up socket: %s); polling only", exc)
                return
            sock.settimeout(0.5)
            while not self._stopping.is_set():
                try:
                    sock.recv(64)
                except TimeoutError:
                    continue
                except OSError:
                    return
                self._wake.set()
                scheduler = self._scheduler
                if scheduler is not None and not self._stopping.is_set():
                    try:
                        scheduler.modify_job("reconcile", next_run_time=datetime.now(UTC))
                    except Exception:  # shutting down
                        return

    # -- the pass -------------------------------------------------------------------

    def _mark_dead_replicas(self) -> None:
        """Replicas of this host whose process is gone free their leases now (not when they expire)."""
        self.store.mark_dead_replicas(self.hostname, lambda pid: pid == os.getpid() or _pid_alive(pid))

    def _take_cluster(self) -> bool:
        assert self.replica is not None
        held = self.store.take_leases(self.replica, [CLUSTER], self.settings.lease_s)
        self._cluster_fence = Fence(CLUSTER, self.replica, held[CLUSTER]) if CLUSTER in held else None
        return self._cluster_fence is not None

    def _take_environments(self) -> dict[int, Fence]:
        """The environments this replica reconciles this pass: those it holds, and free ones up
        to its share (all of them divided among the live replicas); a surplus is given back."""
        assert self.replica is not None
        envs = [e.id for e in self.store.active_environments()]
        replicas = max(1, len(self.store.replicas(timedelta(seconds=self.settings.heartbeat_stale_s))))
        share = math.ceil(len(envs) / replicas)
        mine = sorted(i for i in envs if i in self._env_fences)
        if len(mine) > share:
            surplus = mine[share:]
            self.store.release_leases(self.replica, [env_key(i) for i in surplus])  # type: ignore[arg-type]
            for env_id in surplus:
                self._env_fences.pop(env_id, None)  # type: ignore[arg-type]
        keys = {env_key(i): i for i in envs}  # type: ignore[arg-type]
        held = self.store.take_leases(self.replica, keys, self.settings.lease_s, limit=share)
        fences = {keys[k]: Fence(k, self.replica, token) for k, token in held.items()}
        taken = sorted(i for i in fences if i not in self._env_fences)
        if taken and self._env_fences:  # (the first environments of a replica are not news)
            log.info("reconciling environment(s) %s from now on", ", ".join(map(str, taken)))
        self._env_fences = fences
        self._envs_taken_at = time.monotonic()
        return dict(self._env_fences)

    def _take_over(self) -> None:
        """Started executions whose replica is gone (stopped, its process dead, its lease expired):
        this replica takes them and re-attaches or settles them, as a restarted daemon does."""
        assert self.replica is not None
        taken = []
        for execution in self.store.unowned_executions():
            with self._lock:
                if execution.id in self._running:
                    continue
            if self.store.take_over(execution.id, self.replica, lease_s=self.settings.lease_s) is not None:  # type: ignore[arg-type]
                taken.append(execution)
        if taken:
            log.info("taking over executions %s from a replica that is gone", ", ".join(str(e.id) for e in taken))
            self._settle(taken, at_start=True)

    @property
    def tasks(self) -> TaskEngine:
        if self._tasks is None:
            self._tasks = TaskEngine(self.store)
        return self._tasks

    @property
    def reconciler(self) -> Reconciler:
        if self._reconciler is None:
            self._reconciler = Reconciler(
                self.store, self, hostname=self.hostname,
                runtime_name=lambda env: (self._runtime_for(env).name if capabilities(env.cloud).runs_on_this_host
                                          else "docker"),
                orphan_grace_s=self.settings.orphan_grace_s, drivers=self.drivers,
            )
        return self._reconciler

    def reconcile_pass(self) -> None:
        with self.metrics.reconcile_seconds.time():  # a pass that fails is timed too
            self._reap()
            if not self._stopping.is_set():
                if self.replica is None:  # a pass without `serve` (tests, tools): this process owns all
                    self._register()
                self._mark_dead_replicas()
                if self._take_cluster():
                    cluster = self.store.fenced(self._cluster_fence)
                    try:
                        self.tasks.run_pass(cluster)  # first: the children it adds are dispatched in this pass
                        cluster.admit_created()
                        cluster.finish_drained()
                    except LeaseLost as exc:
                        log.warning("%s", exc)
                        self._cluster_fence = None
                self.reconciler.run_pass(self._take_environments())
                self._take_over()
                self._settle_unowned()
            for execution in self.store.executions_in([S.STOPPING]):
                item = self._running.get(execution.id)  # type: ignore[arg-type]
                if item is not None:
                    item.runner.stop(execution.status_reason or "stopped by request")

    # -- the ExecutionHost the reconciler dispatches to -------------------------------

    def run_execution(self, execution: Execution, env: Environment, machine: Machine) -> None:
        """Run a dispatched execution in a thread of this daemon: here (local, fake) or over SSH."""
        self._start_runner(execution, self._runtime_on(env, machine), env.id)  # type: ignore[arg-type]

    def _runtime_on(self, env: Environment, machine: Machine) -> Runtime:
        if capabilities(env.cloud).runs_on_this_host:
            return self._runtime_for(env)
        return self._remote_runtime(env, machine)

    def _remote_runtime(self, env: Environment, machine: Machine) -> RemoteDockerRuntime:
        from vh_orch.bootstrap.remote import RemoteDockerRuntime
        from vh_orch.bootstrap.ssh import transport_for

        driver = self.drivers.driver(env)
        return RemoteDockerRuntime(transport_for(driver.target(machine)),  # type: ignore[union-attr]
                                   driver.workdir(machine),  # type: ignore[union-attr]
                                   direct_data=capabilities(env.cloud).direct_data, machine_id=machine.id)

    def bootstrap(self, env: Environment, machine: Machine) -> None:
        """Set a machine up over SSH in a thread of its own (once at a time per machine)."""
        with self._lock:
            if machine.id in self._bootstrapping:
                return
            self._bootstrapping.add(machine.id)  # type: ignore[arg-type]
        thread = threading.Thread(target=self._bootstrap, args=(env, machine), name=f"bootstrap-{machine.id}",
                                  daemon=True)
        thread.start()

    def _bootstrap(self, env: Environment, machine: Machine) -> None:
        from vh_orch.bootstrap.docker_host import BootstrapError, bootstrap
        from vh_orch.bootstrap.ssh import HostKeyMismatch, SSHError, transport_for

        assert machine.id is not None
        store = self.store.fenced(self._env_fences.get(env.id))  # type: ignore[arg-type]
        try:
            driver = self.drivers.driver(env)
            transport = transport_for(driver.target(machine))  # type: ignore[union-attr]
            settings = settings_of(env)

            def step(name: str) -> None:
                store.set_bootstrap_step(machine.id, name)  # type: ignore[arg-type]
                failpoints.hit("bootstrap-step")

            bootstrap(transport, driver.workdir(machine),  # type: ignore[union-attr]
                      step,
                      deadline_s=settings.bootstrap_timeout_s,
                      install_command=settings.login.install_docker_command if settings.login else None,
                      first_boot=capabilities(env.cloud).first_boot)
            self._pull_likely_images(env, transport, step)
            # A host this installation used before may hold what a killed daemon left there.
            self._sweep_remote(env, machine)
            store.advance_machine(machine.id, "ready", "ready", None)
        except LeaseLost as exc:
            log.warning("machine %s: %s; its new owner sets it up", machine.id, exc)
        except HostKeyMismatch as exc:
            log.error("machine %s: %s; it will never be used", machine.id, exc)
            self._quietly(store.bootstrap_failed, machine.id, str(exc), never_use=True)
        except ConfigError as exc:
            # Every machine of this environment would fail the same way (no address, a broken
            # endpoint resolver): stop launching until the environment is fixed, end this one.
            log.error("machine %s cannot be reached: %s", machine.id, exc)
            self._quietly(store.record_launch_failure, env.id, "fatal", machine.zone, machine.instance_type,
                          f"machine {machine.id} cannot be reached: {exc}")
            self._quietly(store.bootstrap_failed, machine.id, f"cannot be reached: {exc}", never_use=False)
        except (BootstrapError, SSHError) as exc:
            log.warning("machine %s: bootstrap failed: %s", machine.id, exc)
            self._quietly(store.bootstrap_failed, machine.id, f"bootstrap failed: {exc}", never_use=False)
        except Exception as exc:
            log.exception("machine %s: bootstrap failed", machine.id)
            self._quietly(store.bootstrap_failed, machine.id, f"bootstrap failed: {exc}", never_use=False)
        finally:
            with self._lock:
                self._bootstrapping.discard(machine.id)
            self._wake_now()

    def _pull_likely_images(self, env: Environment, transport: Any, step: Callable[[str], None]) -> None:
        """A new machine pulls the images its environment's queue needs, or used last, before it is ready:
        its first executions start without waiting for a pull (never with pull_policy: never)."""
        from vh_orch.bootstrap.remote import pull_images

        if settings_of(env).pull_policy == "never":
            return
        images = self.store.recent_images(env.id, limit=PREPULL_IMAGES)  # type: ignore[arg-type]
        if images:
            step("pulling images")
            failed = pull_images(transport, images, "if-missing", timeout_s=PREPULL_TIMEOUT_S)
            log.info("%s: pulled %d of the environment's recent images%s", transport.target.label,
                     len(images) - len(failed), f" ({', '.join(failed)} failed)" if failed else "")

    @staticmethod
    def _quietly(write: Any, *args: Any, **kwargs: Any) -> None:
        """A fenced write whose lease may be gone: then the new owner decides, nothing is written."""
        try:
            write(*args, **kwargs)
        except LeaseLost as exc:
            log.warning("%s", exc)

    def abandon(self, execution_ids: list[int], reason: str) -> None:
        with self._lock:
            items = [self._running[i] for i in execution_ids if i in self._running]
        for item in items:
            item.runner.abandon(reason)

    def _runtime_for(self, env: Environment) -> Runtime:
        """Docker or process for an environment that runs here; the Docker probe is cached briefly."""
        key = (env.id, settings_of(env).wanted_runtime)
        cached = self._runtime_cache.get(key)
        now = time.monotonic()
        if cached is None or now - cached[0] > RUNTIME_PROBE_TTL_S:
            name, why = choose_runtime(env)
            if cached is None or cached[1] != name:
                log.info("environment %s runs executions with the %s runtime (%s)", env.name, name, why)
            cached = self._runtime_cache[key] = (now, name)
        return DockerRuntime() if cached[1] == "docker" else ProcessRuntime()

    def _wake_now(self) -> None:
        self._wake.set()
        scheduler = self._scheduler
        if scheduler is not None and not self._stopping.is_set():
            try:
                scheduler.modify_job("reconcile", next_run_time=datetime.now(UTC))
            except Exception:
                pass

    def _start_runner(self, execution: Execution, runtime: Runtime, environment_id: int,
                      reattach: bool = False) -> None:
        assert self.replica is not None and execution.id is not None
        token = self.store.lease_token(exec_key(execution.id), self.replica)
        if token is None:
            log.warning("execution %s: not started here, another replica holds it", execution.id)
            return
        store = self.store.fenced(Fence(exec_key(execution.id), self.replica, token))
        runner = ExecutionRunner(store, self.settings, execution, runtime, self.cluster_id, reattach=reattach,
                                 metrics=self.metrics)

        def run() -> None:
            runner.run()
            self._wake_now()  # its machine is free: a pass now dispatches or marks it idle

        thread = threading.Thread(target=run, name=f"execution-{execution.id}", daemon=True)
        with self._lock:
            self._running[execution.id] = _Running(runner, thread, environment_id,  # type: ignore[index]
                                                   remote=hasattr(runtime, "attach"), since=time.monotonic())
        thread.start()

    def _reap(self) -> int:
        """Forget finished runner threads; returns how many still run."""
        with self._lock:
            for execution_id, item in list(self._running.items()):
                if not item.thread.is_alive():
                    del self._running[execution_id]
            return len(self._running)

    def _recover(self) -> None:
        """Clean up after a daemon that died while it ran executions.

        Every container of this installation on this host's engine that no other live replica
        runs is a leftover now (this daemon runs nothing yet): removed. What the dead daemon
        ran is taken over (see _take_over): Executions on remote machines are re-attached;
        those on this host cannot be resumed: their commands are ended (so that nothing runs
        twice), those on `local` end in `error`, those on fake machines are requeued by the
        reconciler, which finds their instances gone.
        """
        self._mark_dead_replicas()
        self._sweep_local()
        self._take_over()
        envs = {e.id: e for e in self.store.active_environments()}
        for machine in self.store.fleet():
            env = envs.get(machine.environment_id)
            if env is not None and capabilities(env.cloud).reached_over_ssh and machine.state in ("ready", "busy"):
                threading.Thread(target=self._sweep_remote, args=(env, machine), daemon=True,
                                 name=f"sweep-{machine.id}").start()

    def _settle_unowned(self) -> None:
        """Executions that are started but that no runner of this daemon runs (a runner that
        could not record its end, a thread that died): settled like after a restart. Only those
        seen so in two passes in a row: after a restart, the first passes requeue what ran on
        machines that are gone (fake ones), and a runner is registered in the pass that claims."""
        with self._lock:
            owned = set(self._running)
        others = self.store.executions_held_by_others(self.replica)  # type: ignore[arg-type]
        seen = {(e.id, e.attempt): e for e in self.store.executions_in([S.STARTED, S.STOPPING])
                if e.id not in owned and e.id not in others}
        unowned = [e for key, e in seen.items() if key in self._unowned_before]
        self._unowned_before = set(seen)
        if unowned:
            log.warning("executions %s are started but nothing runs them; settling them",
                        ", ".join(str(e.id) for e in unowned))
            self._settle(unowned, at_start=False)

    def _settle(self, executions: list[Execution], at_start: bool) -> None:
        envs = {e.id: e for e in self.store.active_environments()}
        machines = {m.id: m for m in self.store.fleet()}
        for execution in executions:
            env = envs.get(execution.environment_id)
            if env is not None and capabilities(env.cloud).reached_over_ssh:
                machine = machines.get(execution.machine_id)
                if machine is not None:
                    # Its container runs on, on the remote machine: follow it again.
                    log.info("re-attaching to execution %s on machine %s", execution.id, machine.id)
                    self._start_runner(execution, self._runtime_on(env, machine), env.id,  # type: ignore[arg-type]
                                       reattach=True)
                continue  # no live machine: the reconciler marks it lost and requeues
            self._end_leftover(execution)
            if env is not None and not capabilities(env.cloud).machine_is_this_host and at_start:
                # Its command ended with the daemon that ran it; its machine may live on (a cloud
                # shared by replicas) or not (the reconciler then finds it gone): run it again.
                self.store.requeue_lost(execution.id, execution.attempt,  # type: ignore[arg-type]
                                        "the vh-orch replica that ran it stopped", env.max_attempts)
                continue
            self.store.set_status(
                execution.id,  # type: ignore[arg-type]
                S.ERROR,
                "the vh-orch daemon stopped while this execution ran; it was not resumed" if at_start
                else "vh-orch lost track of this execution while it ran; it was ended",
            )

    def _end_leftover(self, execution: Execution) -> None:
        try:
            if execution.runtime == "docker":
                remove_container(container_name(self.cluster_id, execution.id, execution.attempt))  # type: ignore[arg-type]
            else:
                kill_leftover_process(self.settings.executions_dir / str(execution.id) / str(execution.attempt))
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not end what execution %s left running: %s", execution.id, exc)

    def _sweep_local(self) -> None:
        """Remove this installation's containers on this host's engine that no runner of this
        daemon runs (left by a daemon killed mid-start or before it cleaned up). Only ever
        containers labelled with this installation's cluster id and started by a local runtime.
        And release the local input cache entries of attempts that no longer run."""
        self._release_stale_pins()
        try:
            ok, _ = docker_available()
            if not ok:
                return
            found = local_containers(self.cluster_id)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not look for leftover containers: %s", exc)
            return
        with self._lock:
            owned = set(self._running)
        if self.replica is not None:  # another replica's containers on this host are not leftovers
            owned |= self.store.executions_held_by_others(self.replica)
        for container_id, execution_id, attempt in found:
            if execution_id not in owned:
                log.info("removing leftover container of execution %s (attempt %s)", execution_id, attempt)
                remove_container(container_id)

    def _release_stale_pins(self) -> None:
        """Input cache entries on this host pinned by attempts of this installation that no longer run
        (a daemon killed before its runner released them) may be evicted again."""
        prefix = f"{self.cluster_id}-"
        pins = list(self.settings.input_cache_dir.glob(f"env-*/*/pins/{prefix}*"))
        if not pins:
            return
        live = {f"{prefix}{e.id}-{e.attempt}" for e in self.store.executions_in([S.STARTED, S.STOPPING])}
        for pin in pins:
            if pin.name not in live:
                pin.unlink(missing_ok=True)

    def _tidy_images(self) -> None:
        """On the remote machines of the environments this replica holds: when a machine's disk runs low
        (less than `image_disk_low_percent` free, default 15), remove the images vh-orch ran there that
        nothing used for `image_keep` (default 7d)."""
        from vh_orch.bootstrap.ssh import SSHError

        envs = {e.id: e for e in self.store.active_environments() if e.id in self._env_fences}
        for machine in self.store.fleet():
            env = envs.get(machine.environment_id)
            if env is None or not capabilities(env.cloud).reached_over_ssh or machine.state not in ("ready", "busy"):
                continue
            settings = settings_of(env)
            if not settings.image_disk_low_percent:
                continue
            try:
                removed = self._remote_runtime(env, machine).tidy_images(settings.image_keep_s,
                                                                         settings.image_disk_low_percent)
            except (SSHError, ConfigError, OSError, RuntimeFailure) as exc:
                log.info("machine %s: tidying images failed: %s", machine.id, exc)
                continue
            if removed:
                log.info("machine %s: its disk is low; removed images unused for a while: %s", machine.id,
                         ", ".join(removed))

    def _sweep_remote(self, env: Environment, machine: Machine) -> None:
        """The same on a remote machine: containers and folders of executions that no longer run there."""
        from vh_orch.bootstrap.ssh import SSHError

        def live() -> set[tuple[int, int]]:
            return {(e.id, e.attempt) for e in self.store.executions_in([S.STARTED, S.STOPPING])}  # type: ignore[misc]

        try:
            ended = self._remote_runtime(env, machine).sweep(self.cluster_id, live)
        except (SSHError, ConfigError, OSError) as exc:
            log.info("machine %s: looking for leftovers failed: %s", machine.id, exc)
            return
        if ended:
            log.info("machine %s: removed what executions %s left behind", machine.id, ended)
