"""The decisions, as a pure function: `decide(snapshot, now) -> [actions]`.

Nothing here touches a database, a cloud or a clock; reconcile.py builds the snapshot
and applies the actions. Per environment, in this order:

1. sync the rows with the cloud's listing: adopt, advance boot, mark lost, confirm
   terminations, terminate orphans after a grace period;
2. deadlines: launch, boot, bootstrap;
3. dispatch queued executions (FIFO within priority) to ready machines with free slots, and
   with the GPUs each asks for free (first fit: one that waits for GPUs lets those behind it
   that fit go first);
4. scale up: clamp(min_scale - n, needed, max_scale - n), skipping zones and instance
   types blocked by recent capacity errors, backing off after transient errors and
   stopping after a fatal one;
5. retire idle machines while above min_scale and nothing waits: after idle_timeout, or
   when the adaptive idle policy (idle.py) says waiting longer costs more than it saves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.orchestrator.idle import keep_alive_s
from vh_orch.values import PENDING, STOPPING, CloudInstance, MachineState

REQUESTED = MachineState.REQUESTED.value
PROVISIONING = MachineState.PROVISIONING.value
BOOTSTRAPPING = MachineState.BOOTSTRAPPING.value
READY = MachineState.READY.value
BUSY = MachineState.BUSY.value
TERMINATING = MachineState.TERMINATING.value
BOOTING = frozenset({REQUESTED, PROVISIONING, BOOTSTRAPPING})
SERVING = frozenset({READY, BUSY})
LIVE = BOOTING | SERVING
HAS_INSTANCE = frozenset({PROVISIONING, BOOTSTRAPPING, READY, BUSY})

TRANSIENT_BACKOFF_BASE_S = 5.0
TRANSIENT_BACKOFF_MAX_S = 300.0


# -- the snapshot ---------------------------------------------------------------------


@dataclass(frozen=True)
class MachineView:
    id: int
    environment_id: int
    state: str
    instance_id: str | None
    state_changed_at: datetime
    idle_since: datetime | None = None
    running: int = 0
    retry_at: datetime | None = None
    zone: str | None = None
    gpus: int = 0  # the GPUs it has
    gpus_held: int = 0  # of those, the ones its running executions hold


@dataclass(frozen=True)
class FailureView:
    time: datetime
    kind: str  # capacity, quota, transient, fatal
    zone: str | None = None
    instance_type: str | None = None
    message: str = ""


@dataclass(frozen=True)
class EnvView:
    id: int
    name: str
    cloud: str
    min_scale: int = 0
    max_scale: int = 1
    slots: int = 1
    idle_timeout_s: float = 600.0
    zones: tuple[str | None, ...] = (None,)
    instance_types: tuple[str | None, ...] = (None,)
    launch_timeout_s: float = 300.0
    boot_timeout_s: float = 600.0
    bootstrap_timeout_s: float = 1200.0
    capacity_block_s: float = 300.0
    needs_bootstrap: bool = False
    # SSH pools: a zone is one host, which serves one machine at a time.
    exclusive_zones: bool = False
    draining: bool = False
    spot: bool = False  # its instances may be reclaimed by the cloud at any time
    # The idle policy: "timeout" (idle_timeout_s) or "adaptive" (orchestrator/idle.py), which
    # reads the recent submission times (seconds, oldest first) and the measured boot time.
    idle_policy: str = "timeout"
    arrivals: tuple[float, ...] = ()
    boot_s: float = 120.0
    wait_weight: float = 1.0  # machine-seconds a second of waiting is worth (idle.wait_weight)
    updated_at: datetime | None = None
    queued: int = 0
    # The first queued execution ids, FIFO within priority; enough to fill every free slot.
    queued_head: tuple[int, ...] = ()
    # The GPUs each of queued_head asks for (those that ask for none are left out).
    queued_gpus: Mapping[int, int] = field(default_factory=dict)
    # The cloud's listing; None when this environment has no cloud (local) or listing failed.
    instances: tuple[CloudInstance, ...] | None = None
    failures: tuple[FailureView, ...] = ()  # recent launch failures, oldest first

    @property
    def static(self) -> bool:
        """Its one machine is this host: never launched or retired."""
        return capabilities(self.cloud).machine_is_this_host


@dataclass(frozen=True)
class Snapshot:
    environments: tuple[EnvView, ...]
    machines: tuple[MachineView, ...]
    orphan_grace_s: float = 120.0


# -- the actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    reason: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class Launch(Action):
    environment_id: int
    zone: str | None
    instance_type: str | None


@dataclass(frozen=True)
class Dispatch(Action):
    execution_id: int
    machine_id: int


@dataclass(frozen=True)
class Retire(Action):
    """Terminate an idle machine; applied only if it is still idle inside the transaction."""

    machine_id: int
    idle_before: datetime


@dataclass(frozen=True)
class Terminate(Action):
    """Terminate a machine's instance (a missed deadline, or a termination to retry)."""

    machine_id: int


@dataclass(frozen=True)
class Adopt(Action):
    machine_id: int
    instance: CloudInstance


@dataclass(frozen=True)
class Advance(Action):
    machine_id: int
    state: str
    step: str | None = None


@dataclass(frozen=True)
class MarkLost(Action):
    machine_id: int


@dataclass(frozen=True)
class MarkIdle(Action):
    machine_id: int


@dataclass(frozen=True)
class ConfirmTerminated(Action):
    machine_id: int


@dataclass(frozen=True)
class FailMachine(Action):
    machine_id: int


@dataclass(frozen=True)
class TerminateOrphan(Action):
    environment_id: int
    instance_id: str


# -- the decision -----------------------------------------------------------------------


def decide(snapshot: Snapshot, now: datetime) -> list[Action]:
    by_env: dict[int, list[MachineView]] = {}
    for m in snapshot.machines:
        by_env.setdefault(m.environment_id, []).append(m)
    actions: list[Action] = []
    for env in snapshot.environments:
        actions += decide_environment(env, by_env.get(env.id, []), now, snapshot.orphan_grace_s)
    return actions


def decide_environment(env: EnvView, machines: Sequence[MachineView], now: datetime, orphan_grace_s: float) -> list[Action]:
    actions: list[Action] = []
    # Machines this pass already acts on take no part in dispatch; those it ends
    # (lost, failed, terminating, terminated) do not count towards the scale either.
    settled: set[int] = set()
    if env.instances is not None:
        actions += _sync(env, machines, now, orphan_grace_s, settled)
    actions += _deadlines(env, machines, now, settled)
    ending = {
        a.machine_id for a in actions
        if isinstance(a, (MarkLost, ConfirmTerminated, FailMachine, Terminate))
    }

    active = [m for m in machines if m.id not in ending]
    serving = sorted((m for m in active if m.state in SERVING and m.id not in settled),
                     key=lambda m: (-m.running, m.id))
    for m in serving:
        if m.state == BUSY and m.running == 0:
            actions.append(MarkIdle(m.id, reason="no execution runs on it"))

    # Dispatch: fill the busiest machines first, so that others can go idle and retire.
    queue = list(env.queued_head)
    dispatched_to: dict[int, int] = {}
    for m in serving:
        free = env.slots - m.running
        free_gpus = m.gpus - m.gpus_held
        i = 0
        while free > 0 and i < len(queue):
            execution_id = queue[i]
            wanted = env.queued_gpus.get(execution_id, 0)
            if wanted > free_gpus:
                i += 1  # it waits for GPUs; the next that fits goes first
                continue
            queue.pop(i)
            actions.append(Dispatch(execution_id, m.id, reason="a queued execution and a free slot"
                                    + (f" with {wanted} free GPU(s)" if wanted else "")))
            dispatched_to[m.id] = dispatched_to.get(m.id, 0) + 1
            free -= 1
            free_gpus -= wanted
    demand = max(0, env.queued - sum(dispatched_to.values()))

    if env.static:
        return actions

    # Scale up.
    live = [m for m in active if m.state in LIVE]
    n = len(live)
    # A machine adopted or advanced in this pass is not serving yet: count it as booting.
    booting = sum(1 for m in live if m.state in BOOTING or m.id in settled)
    needed = math.ceil(max(0, demand - booting * env.slots) / env.slots)
    want = max(env.min_scale - n, min(needed, env.max_scale - n), 0)
    if env.draining:
        want = 0
    if want:
        used = frozenset(m.zone for m in live if m.zone) if env.exclusive_zones else frozenset()
        actions += _launches(env, want, now, used)

    # Idle scale-down: only when nothing waits, never below min_scale, longest idle first.
    if demand == 0:
        idle = [m for m in serving if m.running == 0 and m.id not in dispatched_to and m.idle_since is not None]
        limits = idle_limits(env, idle)
        floor = 0 if env.draining else env.min_scale
        for m in sorted(idle, key=lambda m: (m.idle_since, m.id)):
            if n <= floor:
                break
            cutoff = now - timedelta(seconds=limits[m.id])
            if env.draining or m.idle_since <= cutoff:  # type: ignore[operator]
                actions.append(Retire(m.id, idle_before=cutoff if not env.draining else now,
                                      reason=f"idle for more than {limits[m.id]:g} s ({env.idle_policy})"
                                      if not env.draining else "the environment is being removed"))
                n -= 1
    return actions


def idle_limits(env: EnvView, idle: Sequence[MachineView]) -> dict[int, float]:
    """How long each idle machine may stay idle. Work goes to idle machines in id order
    (see the dispatch above), so the one with the lowest id is the next to be used."""
    if env.idle_policy != "adaptive":
        return {m.id: env.idle_timeout_s for m in idle}
    return {m.id: keep_alive_s(env.arrivals, rank, env.boot_s, env.idle_timeout_s, env.wait_weight)
            for rank, m in enumerate(sorted(idle, key=lambda m: m.id), start=1)}


def next_retirement(env: EnvView, machines: Sequence[MachineView]) -> datetime | None:
    """When the next idle machine would retire if nothing happened meanwhile (for a simulator's clock)."""
    idle = [m for m in machines if m.state in SERVING and m.running == 0 and m.idle_since is not None]
    live = sum(1 for m in machines if m.state in LIVE)
    if not idle or live <= env.min_scale:
        return None
    limits = idle_limits(env, idle)
    return min(m.idle_since + timedelta(seconds=limits[m.id]) for m in idle)  # type: ignore[operator]


def _sync(env: EnvView, machines: Sequence[MachineView], now: datetime, grace_s: float, settled: set[int]) -> list[Action]:
    actions: list[Action] = []
    instances = env.instances or ()
    rows = {m.id: m for m in machines}
    by_instance = {m.instance_id: m for m in machines if m.instance_id}
    listed = {i.instance_id: i for i in instances if not i.gone}

    claimed: set[str] = set()
    for inst in instances:
        if inst.gone:
            continue
        row = by_instance.get(inst.instance_id)
        if row is not None and (row.state in HAS_INSTANCE or row.state == TERMINATING):
            claimed.add(inst.instance_id)
            continue
        waiting = rows.get(inst.machine_id) if inst.machine_id is not None else None
        if waiting is not None and waiting.state == REQUESTED and waiting.id not in settled:
            actions.append(Adopt(waiting.id, inst, reason="the cloud lists an instance for this row"))
            settled.add(waiting.id)
            claimed.add(inst.instance_id)
    for inst in instances:
        if inst.gone or inst.instance_id in claimed:
            continue
        age = (now - inst.launched_at).total_seconds() if inst.launched_at else grace_s + 1
        if age > grace_s:
            actions.append(TerminateOrphan(env.id, inst.instance_id,
                                           reason=f"no live machine row owns it (machine tag {inst.machine_id})"))

    for m in machines:
        if m.id in settled:
            continue
        if m.state == TERMINATING:
            if m.instance_id is None or m.instance_id not in listed:
                actions.append(ConfirmTerminated(m.id, reason="the cloud lists the instance as gone"))
                settled.add(m.id)
            elif m.retry_at is None or m.retry_at <= now:
                # No retry time: a daemon died between marking it and asking the cloud; ask now.
                actions.append(Terminate(m.id, reason="retrying the termination"))
                settled.add(m.id)
            continue
        if m.state not in HAS_INSTANCE:
            continue
        inst = listed.get(m.instance_id)  # type: ignore[arg-type]
        if inst is None:
            gone = next((i for i in instances if i.instance_id == m.instance_id), None)
            why = gone.state_reason if gone is not None and gone.state_reason else \
                "the instance vanished" + (" (a spot instance: most likely reclaimed by the cloud)" if env.spot else "")
            actions.append(MarkLost(m.id, reason=why))
            settled.add(m.id)
        elif inst.state == STOPPING:
            # Stopped behind vh-orch's back: it serves no one; once lost, orphan handling ends it.
            actions.append(MarkLost(m.id, reason=inst.state_reason or "the instance was stopped"))
            settled.add(m.id)
        elif m.state == PROVISIONING and inst.state != PENDING:
            if env.needs_bootstrap:
                actions.append(Advance(m.id, BOOTSTRAPPING, step="waiting for SSH", reason="the instance is running"))
            else:
                actions.append(Advance(m.id, READY, step="ready", reason="the instance is running"))
            settled.add(m.id)
    return actions


def _deadlines(env: EnvView, machines: Sequence[MachineView], now: datetime, settled: set[int]) -> list[Action]:
    actions: list[Action] = []
    for m in machines:
        if m.id in settled:
            continue
        age = (now - m.state_changed_at).total_seconds()
        if m.state == REQUESTED and age > env.launch_timeout_s:
            actions.append(FailMachine(m.id, reason=f"the launch did not complete within {env.launch_timeout_s:g} s"))
            settled.add(m.id)
        elif m.state == PROVISIONING and age > env.boot_timeout_s:
            actions.append(Terminate(m.id, reason=f"the instance did not boot within {env.boot_timeout_s:g} s"))
            settled.add(m.id)
        elif m.state == BOOTSTRAPPING and age > env.bootstrap_timeout_s:
            actions.append(Terminate(m.id, reason=f"bootstrap did not finish within {env.bootstrap_timeout_s:g} s"))
            settled.add(m.id)
    return actions


def launch_blocked(env: EnvView, now: datetime) -> str | None:
    """Why launching is paused for the whole environment right now, or None."""
    consecutive_transient = 0
    last_transient: FailureView | None = None
    for f in env.failures:
        if f.kind == "fatal" and (env.updated_at is None or f.time >= env.updated_at):
            return f"launching stopped after a fatal error: {f.message} (fix it, then `vh-orch env update`)"
        if f.kind == "quota" and (now - f.time).total_seconds() < env.capacity_block_s:
            return f"quota exceeded: {f.message}"
        if f.kind == "transient":
            consecutive_transient += 1
            last_transient = f
        else:
            consecutive_transient = 0
            last_transient = None
    if last_transient is not None:
        backoff = min(TRANSIENT_BACKOFF_BASE_S * 2 ** (consecutive_transient - 1), TRANSIENT_BACKOFF_MAX_S)
        if (now - last_transient.time).total_seconds() < backoff:
            return f"backing off for {backoff:g} s after: {last_transient.message}"
    return None


def _launches(env: EnvView, count: int, now: datetime, used_zones: frozenset[str] = frozenset()) -> list[Action]:
    if launch_blocked(env, now) is not None:
        return []
    blocked = {
        (f.zone, f.instance_type)
        for f in env.failures
        if f.kind == "capacity" and (now - f.time).total_seconds() < env.capacity_block_s
    }
    blocked_zones = {z for z, t in blocked if t is None}
    blocked_types = {t for z, t in blocked if z is None}
    if env.exclusive_zones:
        free = [z for z in env.zones if z not in used_zones and z not in blocked_zones]
        itype = env.instance_types[0]
        return [Launch(env.id, zone, itype, reason="queued executions need machines") for zone in free[:count]]
    for itype in env.instance_types:
        for zone in env.zones:
            if (zone, itype) in blocked or zone in blocked_zones or itype in blocked_types:
                continue
            return [Launch(env.id, zone, itype, reason="queued executions need machines" if count else "")
                    for _ in range(count)]
    return []
