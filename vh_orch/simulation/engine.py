"""Replay a trace through the real policy against the fake cloud, on a virtual clock.

Each environment's state (machines, queue, the fake cloud's instances) lives in memory.
At every moment something happens — a submission, an execution ending, a machine
finishing its boot, an idle machine reaching the end of its keep-alive — the simulator
builds the same snapshot the reconciler builds from the database (policy.EnvView and
MachineViews, with the fake cloud's listing) and applies what `policy.decide_environment`
returns, as the reconciler would: launches go to FakeCloud, dispatches start executions
(their end is scheduled at once), retirements terminate instances. Nothing sleeps, so
a month of work takes seconds.

Billing runs from the launch to the termination of each instance, and stops for every
policy at the end of the trace (when the last execution ends), so `static` (always on)
and long timeouts are charged for what they keep, not for an open-ended tail.
"""

from __future__ import annotations

import heapq
import math
from itertools import islice
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from vh_orch.cloud_drivers.base import LaunchSpec
from vh_orch.cloud_drivers.fake import FakeCloud, FakeDriver
from vh_orch.cloud_drivers.settings import FakeSection, FakeSettings, settings_of
from vh_orch.config.environments import EnvSpec, parse_duration
from vh_orch.errors import UserInputError
from vh_orch.orchestrator import policy as P
from vh_orch.orchestrator.idle import HISTORY, wait_weight
from vh_orch.simulation.trace import Submission

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
CLUSTER = "vh-simulation"
DEFAULT_BOOT_S = 120.0
ARRIVALS_REFRESH = 16  # the adaptive policy's view of the arrivals is refreshed this often
PASSES_PER_MOMENT = 4  # boot done -> ready -> dispatch may take several passes at one moment


@dataclass(frozen=True)
class PolicyChoice:
    """`adaptive`, `static`, or `idle-timeout:DURATION`."""

    name: str
    idle_policy: str = "timeout"
    idle_timeout_s: float | None = None
    static: bool = False

    @classmethod
    def parse(cls, text: str) -> PolicyChoice:
        text = text.strip()
        if text == "adaptive":
            return cls(text, idle_policy="adaptive")
        if text == "static":
            return cls(text, static=True)
        if text.startswith("idle-timeout:"):
            seconds = parse_duration(text.partition(":")[2], f"--policy {text}")
            return cls(text, idle_timeout_s=seconds)
        raise UserInputError(f"unknown policy {text!r}; use adaptive, static or idle-timeout:DURATION "
                             "(e.g. idle-timeout:5m)")


@dataclass
class SimMachine:
    view: P.MachineView
    launched_s: float
    ended_s: float | None = None
    idle_from_s: float | None = None
    idle_total_s: float = 0.0


@dataclass
class SimEnv:
    view: P.EnvView
    price: float
    driver: FakeDriver
    cloud: FakeCloud
    machines: dict[int, SimMachine] = field(default_factory=dict)
    live: dict[int, SimMachine] = field(default_factory=dict)  # not ended
    queue: deque[int] = field(default_factory=deque)
    arrivals: list[float] = field(default_factory=list)
    listing: tuple[Any, ...] | None = None  # the fake cloud's last answer; None when it may have changed


@dataclass
class Result:
    policy: str
    executions: int
    cost: float
    ideal_cost: float
    machine_hours: float
    idle_machine_hours: float
    launches: int
    wait_p50_s: float
    wait_p95_s: float
    wait_max_s: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class Simulation:
    def __init__(self, specs: list[EnvSpec], trace: list[Submission], choice: PolicyChoice) -> None:
        names = {s.name for s in specs}
        missing = sorted({s.environment for s in trace} - names)
        if missing:
            raise UserInputError(f"the trace uses environment {missing[0]!r}, which the environments file does "
                                 f"not define (it defines {', '.join(sorted(names)) or 'none'})")
        self.trace = trace
        self.choice = choice
        self.clock_s = 0.0
        self.envs: dict[str, SimEnv] = {}
        for i, spec in enumerate(specs, start=1):
            self.envs[spec.name] = self._env(i, spec)
        self.by_id = {e.view.id: e for e in self.envs.values()}
        self.start_s = [math.nan] * len(trace)
        self.completions: list[tuple[float, int, int]] = []  # (time, execution, machine)
        self.boots: list[float] = []  # when instances finish booting
        self.next_machine = 1
        self.machine_env: dict[int, SimEnv] = {}
        self.launches = 0

    def _env(self, env_id: int, spec: EnvSpec) -> SimEnv:
        c, s = spec.columns, settings_of(spec)
        max_scale = c["max_scale"]
        min_scale = max_scale if self.choice.static else c["min_scale"]
        idle_timeout = math.inf if self.choice.static else (self.choice.idle_timeout_s or c["idle_timeout_s"])
        # Every environment is simulated on the fake cloud: a `fake:` section's boot time and zones hold,
        # and where it names none, a typical VM's boot time and one zone.
        fake = s.fake if isinstance(s, FakeSettings) else FakeSection()
        boot = fake.boot_seconds if "boot_seconds" in fake.model_fields_set else DEFAULT_BOOT_S
        cloud = FakeCloud(clock=self.now)
        view = P.EnvView(
            id=env_id, name=spec.name, cloud="fake", min_scale=min_scale, max_scale=max_scale,
            slots=c["slots"], idle_timeout_s=idle_timeout,
            zones=fake.zones or ("fake-a",),
            instance_types=s.instance_types or (c.get("instance_type"),),
            launch_timeout_s=math.inf, boot_timeout_s=math.inf, bootstrap_timeout_s=math.inf,
            idle_policy=self.choice.idle_policy, boot_s=max(boot, 1.0), instances=(),
            wait_weight=wait_weight(s.wait_cost_per_hour, c["price_per_hour"]),
        )
        return SimEnv(view, c["price_per_hour"], FakeDriver(cloud, CLUSTER, spec.name, boot), cloud)

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.clock_s)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> Result:
        trace = self.trace
        next_arrival = 0
        retire_at: float = math.inf
        self._passes()  # min_scale machines (all of them for `static`) start at once
        while next_arrival < len(trace) or self.completions or any(e.queue for e in self.envs.values()):
            t = min(trace[next_arrival].submit_s if next_arrival < len(trace) else math.inf,
                    self.completions[0][0] if self.completions else math.inf,
                    self.boots[0] if self.boots else math.inf, retire_at)
            if t == math.inf:
                stuck = next(e.view.name for e in self.envs.values() if e.queue)
                raise UserInputError(f"executions wait in {stuck!r} and nothing will ever run them "
                                     "(is its max_scale 0?)")
            self.clock_s = max(self.clock_s, t)
            while next_arrival < len(trace) and trace[next_arrival].submit_s <= t:
                env = self.envs[trace[next_arrival].environment]
                env.queue.append(next_arrival)
                env.arrivals.append(trace[next_arrival].submit_s)
                next_arrival += 1
            while self.completions and self.completions[0][0] <= t:
                _, _, machine_id = heapq.heappop(self.completions)
                self._finished(self.machine_env[machine_id], machine_id)
            while self.boots and self.boots[0] <= t:
                heapq.heappop(self.boots)
                for env in self.envs.values():
                    env.listing = None  # an instance is up: the cloud's answer changed
            self._passes()
            retire_at = self._next_retirement()
        return self._result()

    def _passes(self) -> None:
        for env in self.envs.values():
            for _ in range(PASSES_PER_MOMENT):
                if not self._pass(env):
                    break

    def _pass(self, env: SimEnv) -> bool:
        """One reconcile pass for one environment; whether another pass at this moment may do more
        (a machine became ready or idle: work can go to it)."""
        if not env.live and not env.queue and env.view.min_scale == 0:
            return False
        live = [m.view for m in env.live.values()]
        slots = env.view.slots
        free = sum(slots - v.running for v in live if v.state in P.SERVING)
        if env.listing is None:
            env.listing = tuple(env.driver.list_instances())
        view = replace(env.view, queued=len(env.queue), queued_head=tuple(islice(env.queue, free)),
                       instances=env.listing, arrivals=self._arrivals(env))
        again = False
        for action in P.decide_environment(view, live, self.now(), 120.0):
            self._apply(env, action)
            again = again or isinstance(action, (P.Advance, P.MarkIdle))
        return again

    def _arrivals(self, env: SimEnv) -> tuple[float, ...]:
        if env.view.idle_policy != "adaptive":
            return ()
        # The policy's cache is keyed on this tuple: refresh it every few arrivals, not every pass.
        cut = len(env.arrivals) - len(env.arrivals) % ARRIVALS_REFRESH
        return tuple(env.arrivals[max(0, cut - HISTORY):cut])

    def _apply(self, env: SimEnv, action: P.Action) -> None:
        now, t = self.now(), self.clock_s
        match action:
            case P.Launch(zone=zone, instance_type=itype):
                machine_id = self.next_machine
                self.next_machine += 1
                instance = env.driver.launch(LaunchSpec(machine_id, "", CLUSTER, env.view.name, zone, itype))
                env.machines[machine_id] = SimMachine(P.MachineView(
                    id=machine_id, environment_id=env.view.id, state=P.PROVISIONING, instance_id=instance.instance_id,
                    state_changed_at=now, zone=zone), launched_s=t)
                heapq.heappush(self.boots, t + env.driver.boot_seconds)
                self.machine_env[machine_id] = env
                env.live[machine_id] = env.machines[machine_id]
                env.listing = None
                self.launches += 1
            case P.Advance(machine_id=mid, state=state):
                m = env.machines[mid]
                m.view = replace(m.view, state=state, state_changed_at=now,
                                 idle_since=now if state == P.READY else None)
                if state == P.READY:
                    m.idle_from_s = t
            case P.Dispatch(execution_id=eid, machine_id=mid):
                m = env.machines[mid]
                env.queue.remove(eid)
                self.start_s[eid] = t
                heapq.heappush(self.completions, (t + self.trace[eid].duration_s, eid, mid))
                self._busy(m, t)
                m.view = replace(m.view, state=P.BUSY, running=m.view.running + 1, idle_since=None,
                                 state_changed_at=now)
            case P.Retire(machine_id=mid) | P.Terminate(machine_id=mid) | P.MarkLost(machine_id=mid) | \
                    P.FailMachine(machine_id=mid):
                m = env.machines[mid]
                self._busy(m, t)
                m.ended_s = t
                m.view = replace(m.view, state=P.TERMINATING)
                env.driver.terminate([m.view.instance_id or ""])
                env.cloud.instances.pop(m.view.instance_id or "", None)
                env.live.pop(mid, None)
                env.listing = None
            case P.MarkIdle(machine_id=mid):
                m = env.machines[mid]
                m.view = replace(m.view, state=P.READY, idle_since=now)
                m.idle_from_s = t
            case _:
                pass  # adoption, orphans, confirmations: nothing of that happens without faults

    def _finished(self, env: SimEnv, machine_id: int) -> None:
        m = env.machines[machine_id]
        running = m.view.running - 1
        if running == 0:  # as the store does when an execution ends: the machine is idle
            m.view = replace(m.view, state=P.READY, running=0, idle_since=self.now())
            m.idle_from_s = self.clock_s
        else:
            m.view = replace(m.view, running=running)

    @staticmethod
    def _busy(m: SimMachine, t: float) -> None:
        if m.idle_from_s is not None:
            m.idle_total_s += t - m.idle_from_s
            m.idle_from_s = None

    def _next_retirement(self) -> float:
        best = math.inf
        for env in self.envs.values():
            if not env.live:
                continue
            when = P.next_retirement(replace(env.view, arrivals=self._arrivals(env)),
                                     [m.view for m in env.live.values()])
            if when is not None:
                best = min(best, max(self.clock_s, (when - EPOCH).total_seconds()))
        return best

    # -- the figures --------------------------------------------------------------------

    def _result(self) -> Result:
        end = self.clock_s
        cost = machine_s = idle_s = 0.0
        for env in self.envs.values():
            for m in env.machines.values():
                stop = m.ended_s if m.ended_s is not None else end
                if m.ended_s is None:
                    self._busy(m, end)
                machine_s += stop - m.launched_s
                idle_s += m.idle_total_s
                cost += (stop - m.launched_s) / 3600 * env.price
        # The work alone: each execution's share of a machine (1/slots) for exactly its duration.
        ideal = sum(s.duration_s / 3600 * self.envs[s.environment].price / self.envs[s.environment].view.slots
                    for s in self.trace)
        waits = sorted(start - s.submit_s for start, s in zip(self.start_s, self.trace))
        return Result(
            policy=self.choice.name, executions=len(self.trace), cost=cost, ideal_cost=ideal,
            machine_hours=machine_s / 3600, idle_machine_hours=idle_s / 3600, launches=self.launches,
            wait_p50_s=_percentile(waits, 0.50), wait_p95_s=_percentile(waits, 0.95), wait_max_s=waits[-1],
        )


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def simulate(specs: list[EnvSpec], trace: list[Submission], policies: list[str]) -> list[Result]:
    return [Simulation(specs, trace, PolicyChoice.parse(p)).run() for p in policies]
