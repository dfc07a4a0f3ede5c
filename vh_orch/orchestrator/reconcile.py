"""One reconcile pass: read a snapshot, ask the policy, apply its actions, record why.

Everything that touches the outside world happens here or below: the store, the
cloud drivers, and the ExecutionHost that runs executions on machines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from vh_orch import failpoints
from vh_orch.cloud_drivers.base import LaunchSpec
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.errors import CapacityError, ConfigError, LeaseLost, QuotaExceeded, TransientCloudError
from vh_orch.orchestrator import policy as P
from vh_orch.orchestrator.drivers import Drivers
from vh_orch.orchestrator.idle import HISTORY, wait_weight
from vh_orch.orchestrator.models import Environment, Execution, Machine
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.database import Fence
from vh_orch.orchestrator.store.leases import DEFAULT_LEASE_S
from vh_orch.timeutil import utcnow
from vh_orch.values import CloudInstance

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
TERMINATE_RECHECK_S = 60.0
GPU_LOOKAHEAD = 32  # queued executions read past the free slots (see _env_view)
DEFAULT_BOOT_S = 120.0  # until a boot has been measured: a typical cloud VM with Docker
BOOT_SAMPLES = 20
TERMINATE_BACKOFF_BASE_S = 5.0
TERMINATE_BACKOFF_MAX_S = 300.0
# How each launch error is recorded, and whether the row fails at once. After a transient
# error the instance may exist all the same: the row waits to be adopted until its deadline.
FAILURE_KINDS = (
    (CapacityError, "capacity", True),
    (QuotaExceeded, "quota", True),
    (TransientCloudError, "transient", False),
)


class ExecutionHost(Protocol):
    """Where dispatched executions run (the daemon's runner threads, or a test's stand-in)."""

    def run_execution(self, execution: Execution, env: Environment, machine: Machine,
                      fence: Fence | None = None) -> None: ...

    def abandon(self, execution_ids: list[int], reason: str) -> None:
        """Stop executions that were requeued or failed elsewhere; their results no longer count."""
        ...


def backoff(attempts: int, base: float = TERMINATE_BACKOFF_BASE_S, cap: float = TERMINATE_BACKOFF_MAX_S) -> float:
    return min(base * 2 ** max(0, attempts - 1), cap)


class Reconciler:
    def __init__(
        self,
        store: Store,
        host: ExecutionHost,
        clock: Clock = utcnow,
        orphan_grace_s: float = 120.0,
        hostname: str = "localhost",
        drivers: Drivers | None = None,
        runtime_name: Callable[[Environment], str] = lambda env: "process",
        host_gpus: Callable[[], tuple[int, str | None]] = lambda: (0, None),
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.store = store
        self.lease_s = lease_s  # the replica's leases' length: a runner trusts a claim's lease for a quarter
        self.host = host
        self.clock = clock
        self.orphan_grace_s = orphan_grace_s
        self.hostname = hostname
        self.cluster_id = store.cluster_id()
        self.drivers = drivers or Drivers(self.cluster_id)  # the daemon's, shared with machine setup
        self._driver_errors: dict[int, str] = {}
        self._orphan_retry: dict[str, datetime] = {}
        self.runtime_name = runtime_name
        # This host's GPUs (count, model): the GPUs of the machines of environments that run here.
        self.host_gpus = host_gpus
        self.last_actions: list[P.Action] = []
        self._listed: dict[str, CloudInstance] = {}
        self._booting_seen: set[int] = set()
        self._boot_times: dict[int, list[float]] = {}
        self._fences: dict[int, Fence] = {}

    # -- the pass ---------------------------------------------------------------------

    def run_pass(self, owned: dict[int, Fence] | None = None) -> list[P.Action]:
        """One pass over every environment, or (a replica) over those it holds the lease of:
        `owned` maps each to its fence, and every write and cloud call for it is fenced. Admission
        and draining are then the caller's (they belong to the replica that holds `cluster`)."""
        now = self.clock()
        if owned is None:
            self.store.admit_created()
            self.store.finish_drained()
        envs = {e.id: e for e in self.store.active_environments() if owned is None or e.id in owned}
        self._fences = owned or {}
        for env in envs.values():
            if capabilities(env.cloud).machine_is_this_host:
                self.store.ensure_host_machine(env, self.hostname)
        # Listings first: a cloud may report launches that failed after they were accepted,
        # and those rows must be settled before the fleet is read.
        listings = {env.id: self._list(env) for env in envs.values() if capabilities(env.cloud).lists_instances}
        for env in envs.values():
            self._late_launch_failures(env)
        with self.store.one_read():  # what the pass decides on: one read, after the listings' writes
            machines = [m for m in self.store.fleet() if owned is None or m.environment_id in envs]
            self._measure_boots(machines, now)
            gpus = self._gpus_of(envs, machines)
            running = self.store.running_per_machine()
            held = self.store.gpus_held_per_machine()
            views = []
            for env in envs.values():
                views.append(self._env_view(env, [m for m in machines if m.environment_id == env.id], running,
                                            listings.get(env.id), gpus))
        snapshot = P.Snapshot(
            environments=tuple(views),
            machines=tuple(
                P.MachineView(
                    id=m.id,  # type: ignore[arg-type]
                    environment_id=m.environment_id,
                    state=m.state,
                    instance_id=m.instance_id,
                    state_changed_at=m.state_changed_at,
                    idle_since=m.idle_since,
                    running=running.get(m.id, 0),  # type: ignore[arg-type]
                    retry_at=m.retry_at,
                    zone=m.zone,
                    gpus=gpus.get(m.id, m.gpus),
                    gpus_held=held.get(m.id, 0),
                )
                for m in machines
            ),
            orphan_grace_s=self.orphan_grace_s,
        )
        self._listed = {i.instance_id: i for v in views for i in (v.instances or ()) if not i.gone}
        actions = P.decide(snapshot, now)
        machine_rows = {m.id: m for m in machines}
        capacity_hit: set[int] = set()
        # A machine's dispatches are claimed together, where its first one is (see _dispatch).
        dispatches: dict[int, list[int]] = {}
        for action in actions:
            if isinstance(action, P.Dispatch):
                dispatches.setdefault(action.machine_id, []).append(action.execution_id)
        for action in actions:
            if isinstance(action, P.Dispatch) and action.machine_id not in dispatches:
                continue  # claimed with the machine's first
            env_id = _environment_of(action, machine_rows)
            store = self.store.fenced(self._fences.get(env_id))  # type: ignore[arg-type]
            try:
                self._apply(store, action, envs, machine_rows, capacity_hit, now, dispatches)
            except LeaseLost as exc:
                log.warning("environment %s: %s; leaving it to its new owner", env_id, exc)
                self._fences.pop(env_id, None)  # type: ignore[arg-type]
            except Exception:
                log.exception("could not apply %s", action)
        self._bootstrap(envs, machines, actions)
        self.last_actions = actions
        return actions

    def _gpus_of(self, envs: dict, machines: list) -> dict[int, int]:  # type: ignore[type-arg]
        """The machines of environments that run on this host have this host's GPUs: recorded on
        them when they differ (found once per daemon), and returned (machine id -> GPUs)."""
        found: dict[int, int] = {}
        for m in machines:
            env = envs.get(m.environment_id)
            if env is None or not capabilities(env.cloud).runs_on_this_host or m.state not in P.SERVING:
                continue
            count, model = self.host_gpus()
            found[m.id] = count
            if (m.gpus, m.gpu_model) != (count, model):
                try:
                    self.store.fenced(self._fences.get(env.id)).record_gpus(m.id, count, model)
                except LeaseLost:
                    pass  # the environment's new owner records them
        return found

    def _bootstrap(self, envs: dict, machines: list, actions: list[P.Action]) -> None:  # type: ignore[type-arg]
        """Machines in `bootstrapping` (before or by this pass) are set up by the host, one thread each."""
        start = getattr(self.host, "bootstrap", None)
        if start is None:
            return
        advanced = {a.machine_id for a in actions if isinstance(a, P.Advance) and a.state == P.BOOTSTRAPPING}
        ended = {a.machine_id for a in actions
                 if isinstance(a, (P.MarkLost, P.Terminate, P.ConfirmTerminated, P.FailMachine))}
        for machine in machines:
            env = envs.get(machine.environment_id)
            if env is not None and (machine.state == P.BOOTSTRAPPING or machine.id in advanced) \
                    and machine.id not in ended:
                start(env, machine)

    def _env_view(self, env: Environment, machines: list[Machine], running: dict[int, int],
                  instances: tuple | None, gpus: dict[int, int]) -> P.EnvView:  # type: ignore[type-arg]
        assert env.id is not None
        free = sum(max(0, env.slots - running.get(m.id, 0)) for m in machines  # type: ignore[arg-type]
                   if m.state in P.SERVING)
        # With GPUs, a few past the free slots: those behind an execution that waits for GPUs may fit.
        lookahead = GPU_LOOKAHEAD if free and any(gpus.get(m.id, m.gpus) for m in machines) else 0  # type: ignore[arg-type]
        queued, head, head_gpus = self.store.queue_view(env.id, free + lookahead)
        settings = settings_of(env)
        can = capabilities(env.cloud)
        return P.EnvView(
            id=env.id,
            name=env.name,
            cloud=env.cloud,
            min_scale=env.min_scale,
            max_scale=env.max_scale,
            slots=env.slots,
            idle_timeout_s=env.idle_timeout_s,
            zones=settings.zones,
            instance_types=settings.instance_types or (env.instance_type,),
            launch_timeout_s=settings.launch_timeout_s,
            boot_timeout_s=settings.boot_timeout_s,
            bootstrap_timeout_s=settings.bootstrap_timeout_s,
            capacity_block_s=settings.capacity_block_s,
            needs_bootstrap=can.needs_bootstrap,
            exclusive_zones=can.host_pool,
            draining=settings.draining,
            spot=env.spot,
            idle_policy=settings.idle_policy,
            arrivals=self.store.recent_arrivals(env.id, HISTORY) if settings.idle_policy == "adaptive" else (),
            boot_s=self._boot_s(env, settings.simulated_boot_s),
            wait_weight=wait_weight(settings.wait_cost_per_hour, env.price_per_hour),
            updated_at=env.updated_at,
            queued=queued,
            queued_head=head,
            queued_gpus=head_gpus,
            instances=instances,
            failures=tuple(
                P.FailureView(time=f.time, kind=f.kind, zone=f.zone, instance_type=f.instance_type, message=f.message)
                for f in self.store.recent_failures(env.id)
            ),
        )

    def _late_launch_failures(self, env: Environment) -> None:
        """Launches the cloud accepted and then failed (GCE reports capacity and quota errors inside
        the insert's operation): recorded like a failure at launch time, the row `failed`."""
        driver = self.drivers.made(env)
        take = getattr(driver, "launch_failures", None)
        if take is None:
            return
        for outcome in take():
            kind = next((k for cls, k, _ in FAILURE_KINDS if isinstance(outcome.error, cls)), "fatal")
            message = str(outcome.error) or type(outcome.error).__name__
            log.warning("environment %s: launch in %s/%s failed (%s): %s", env.name, outcome.zone,
                        outcome.instance_type, kind, message)
            self.store.record_launch_failure(env.id, kind, outcome.zone, outcome.instance_type, message)  # type: ignore[arg-type]
            self.store.fail_machine(outcome.machine_id, f"launch failed ({kind}): {message}", booting_too=True)

    def _measure_boots(self, machines: list, now: datetime) -> None:  # type: ignore[type-arg]
        """How long machines take from their row to serving, per environment (the adaptive idle
        policy weighs a new boot by it). Machines already serving when this daemon started are
        not measured: when they became ready is not known."""
        for m in machines:
            if m.state in P.BOOTING:
                self._booting_seen.add(m.id)
            elif m.state in P.SERVING and m.id in self._booting_seen:
                self._booting_seen.discard(m.id)
                created = m.created_at if m.created_at.tzinfo else m.created_at.replace(tzinfo=now.tzinfo)
                times = self._boot_times.setdefault(m.environment_id, [])
                times[:] = (times + [(now - created).total_seconds()])[-BOOT_SAMPLES:]

    def _boot_s(self, env: Environment, simulated_s: float | None) -> float:
        times = self._boot_times.get(env.id or 0)
        if times:
            return sum(times) / len(times)
        if simulated_s is not None:
            return simulated_s or 1.0
        return DEFAULT_BOOT_S

    def _list(self, env: Environment) -> tuple | None:  # type: ignore[type-arg]
        try:
            driver = self.drivers.driver(env)
            if driver is None:
                return None
            instances = tuple(driver.list_instances())
            self._driver_errors.pop(env.id, None)  # type: ignore[arg-type]
            return instances
        except ConfigError as exc:
            if self._driver_errors.get(env.id) != str(exc):  # type: ignore[arg-type]
                log.error("%s", exc)
                self._driver_errors[env.id] = str(exc)  # type: ignore[index]
            return None
        except Exception as exc:  # listing failed: change nothing this pass
            log.warning("environment %s: listing instances failed: %s", env.name, exc)
            return None

    # -- applying actions ---------------------------------------------------------------

    def _apply(self, store: Store, action: P.Action, envs: dict, machines: dict,  # type: ignore[type-arg]
               capacity_hit: set[int], now: datetime, dispatches: dict[int, list[int]]) -> None:
        """Apply one action, writing through `store` (fenced by its environment's lease). dispatches: the
        executions each machine is dispatched, claimed together at its first Dispatch (then gone)."""
        match action:
            case P.Launch(environment_id=env_id, zone=zone, instance_type=itype):
                if env_id not in capacity_hit:
                    self._launch(store, envs[env_id], zone, itype, capacity_hit)
            case P.Dispatch(machine_id=mid):
                self._dispatch(store, dispatches.pop(mid), machines[mid], envs)
            case P.Retire(machine_id=mid, idle_before=before):
                machine = store.retire_if_idle(mid, before, action.reason)
                if machine is not None:
                    self._terminate(store, machine, envs[machine.environment_id], now)
            case P.Terminate(machine_id=mid):
                machine = store.begin_terminate(mid, action.reason) if machines[mid].state != "terminating" \
                    else machines[mid]
                if machine is not None:
                    self._terminate(store, machine, envs[machine.environment_id], now)
            case P.Adopt(machine_id=mid, instance=instance):
                store.adopt_instance(mid, instance, action.reason)
            case P.Advance(machine_id=mid, state=state, step=step):
                store.advance_machine(mid, state, step, action.reason)
            case P.MarkLost(machine_id=mid):
                env = envs[machines[mid].environment_id]
                affected = store.mark_lost(mid, action.reason, env.max_attempts)
                if affected:
                    self.host.abandon(affected, f"machine {mid} lost")
                instance_id = machines[mid].instance_id
                driver = self.drivers.driver(env)
                if instance_id in self._listed and driver is not None:
                    store.check_fence()
                    # Lost, yet still there (stopped behind our back): it must not linger.
                    driver.terminate([instance_id])
            case P.MarkIdle(machine_id=mid):
                store.mark_idle(mid)
            case P.ConfirmTerminated(machine_id=mid):
                store.confirm_terminated(mid)
            case P.FailMachine(machine_id=mid):
                store.fail_machine(mid, action.reason)
            case P.TerminateOrphan(environment_id=env_id, instance_id=iid):
                if self._orphan_retry.get(iid, now) <= now:
                    log.warning("terminating orphan instance %s: %s", iid, action.reason)
                    self._orphan_retry[iid] = now + timedelta(seconds=TERMINATE_RECHECK_S)
                    driver = self.drivers.driver(envs[env_id])
                    if driver is not None:
                        store.check_fence()
                        driver.terminate([iid])

    def _dispatch(self, store: Store, execution_ids: list[int], machine: Machine, envs: dict) -> None:  # type: ignore[type-arg]
        """Start what the plan dispatches to a machine: claimed in one write, then each run."""
        env = envs[machine.environment_id]
        for execution, fence in store.claim_leased(execution_ids, machine.id, env.slots,  # type: ignore[arg-type]
                                                   self.runtime_name(env), fresh_s=self.lease_s / 4):
            try:
                self.host.run_execution(execution, env, machine, fence)
            except LeaseLost:
                raise
            except Exception:  # the rest still start
                log.exception("execution %s: could not start its runner", execution.id)

    def _launch(self, store: Store, env: Environment, zone: str | None, itype: str | None,
                capacity_hit: set[int]) -> None:
        driver = self.drivers.driver(env)
        if driver is None:
            return
        # What the instance type has, known before it boots (for placement); unknown counts as none.
        row = store.create_machine(env, zone, itype, gpus=driver.expected_gpus(itype) or 0)
        failpoints.hit("launch-row-written")
        store.check_fence()  # a replica paused past its lease launches nothing when it wakes
        spec = LaunchSpec(
            machine_id=row.id,  # type: ignore[arg-type]
            launch_token=row.launch_token or "",
            cluster_id=self.cluster_id,
            environment=env.name,
            zone=zone,
            instance_type=itype,
            spot=env.spot,
        )
        try:
            instance = driver.launch(spec)
        except Exception as exc:
            # Nothing more launches in this environment this pass; the next pass decides anew.
            capacity_hit.add(env.id)  # type: ignore[arg-type]
            kind, fail_row = next(((k, f) for cls, k, f in FAILURE_KINDS if isinstance(exc, cls)), ("fatal", True))
            fail_row = fail_row or not getattr(exc, "maybe_created", True)
            self._launch_failed(store, env, row, kind, zone, itype, exc, fail_row=fail_row)
        else:
            failpoints.hit("launch-call-returned")
            try:
                store.adopt_instance(row.id, instance, "launched")  # type: ignore[arg-type]
            except LeaseLost:
                # Lost the environment during the call: nobody would own this instance; end it now.
                driver.terminate([instance.instance_id])
                raise

    def _launch_failed(self, store: Store, env: Environment, row: Machine, kind: str, zone: str | None,
                       itype: str | None, exc: Exception, fail_row: bool) -> None:
        message = str(exc) or type(exc).__name__
        log.warning("environment %s: launch in %s/%s failed (%s): %s", env.name, zone, itype, kind, message)
        store.record_launch_failure(env.id, kind, zone, itype, message)  # type: ignore[arg-type]
        if fail_row:
            store.fail_machine(row.id, f"launch failed ({kind}): {message}")  # type: ignore[arg-type]

    def _terminate(self, store: Store, machine: Machine, env: Environment, now: datetime) -> None:
        if machine.instance_id is None:
            store.fail_machine(machine.id, machine.reason or "terminated before it had an instance")  # type: ignore[arg-type]
            return
        driver = self.drivers.driver(env)
        if driver is None:  # local: this host is released, never powered off
            store.confirm_terminated(machine.id)  # type: ignore[arg-type]
            return
        try:
            store.check_fence()
            driver.terminate([machine.instance_id])
        except LeaseLost:
            raise
        except Exception as exc:
            attempts = machine.terminate_attempts + 1
            retry = now + timedelta(seconds=backoff(attempts))
            log.warning("terminating %s failed (attempt %d), retrying at %s: %s",
                        machine.instance_id, attempts, retry, exc)
            store.termination_failed(machine.id, str(exc) or type(exc).__name__, retry)  # type: ignore[arg-type]
        else:
            store.termination_requested(machine.id, now + timedelta(seconds=TERMINATE_RECHECK_S))  # type: ignore[arg-type]


def _environment_of(action: P.Action, machines: dict) -> int | None:  # type: ignore[type-arg]
    """The environment an action is about (its fence guards the action's writes)."""
    env_id = getattr(action, "environment_id", None)
    if env_id is not None:
        return env_id  # type: ignore[no-any-return]
    machine = machines.get(getattr(action, "machine_id", None))
    return machine.environment_id if machine is not None else None
