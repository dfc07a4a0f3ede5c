"""The policy as tables of situations: snapshot in, actions out. No database, no cloud, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vh_orch.orchestrator import policy as P
from vh_orch.values import PENDING, RUNNING, TERMINATED, CloudInstance

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def env(**kw) -> P.EnvView:  # type: ignore[no-untyped-def]
    base = dict(id=1, name="gpu", cloud="fake", min_scale=0, max_scale=4, slots=1, idle_timeout_s=600,
                instances=())
    base.update(kw)
    return P.EnvView(**base)  # type: ignore[arg-type]


def machine(mid: int, state: str, **kw) -> P.MachineView:  # type: ignore[no-untyped-def]
    base = dict(id=mid, environment_id=1, state=state, instance_id=f"i-{mid}", state_changed_at=ago(60))
    if state == P.READY:
        base["idle_since"] = ago(10)
    base.update(kw)
    return P.MachineView(**base)  # type: ignore[arg-type]


def inst(mid: int | None, state: str = RUNNING, iid: str | None = None, age: float = 600, **kw) -> CloudInstance:  # type: ignore[no-untyped-def]
    return CloudInstance(instance_id=iid or f"i-{mid}", machine_id=mid, state=state, launched_at=ago(age), **kw)


def decide(e: P.EnvView, *machines: P.MachineView, grace: float = 120) -> list[P.Action]:
    return P.decide(P.Snapshot(environments=(e,), machines=tuple(machines), orphan_grace_s=grace), NOW)


def kinds(actions: list[P.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def launches(actions: list[P.Action]) -> int:
    return sum(isinstance(a, P.Launch) for a in actions)


# -- scale up: clamp(min_scale - n, demand - idle - booting, max_scale - n) --------------------------

@pytest.mark.parametrize(
    ("min_scale", "max_scale", "queued", "states", "slots", "expected"),
    [
        (0, 4, 0, [], 1, 0),                        # nothing waits, nothing runs
        (0, 4, 3, [], 1, 3),                        # burst from zero
        (0, 2, 5, [], 1, 2),                        # never above max_scale
        (0, 4, 5, [P.REQUESTED, P.PROVISIONING], 1, 2),   # booting machines count, max_scale caps
        (0, 8, 5, [P.REQUESTED, P.PROVISIONING], 1, 3),
        (0, 4, 2, [P.PROVISIONING, P.PROVISIONING], 1, 0),
        (2, 4, 0, [], 1, 2),                        # min_scale even without work
        (2, 4, 0, [P.READY], 1, 1),
        (1, 4, 0, [P.READY, P.BUSY], 1, 0),
        (0, 4, 5, [P.BUSY, P.BUSY, P.BUSY, P.BUSY], 1, 0),  # at max already
        (0, 4, 5, [], 2, 3),                        # two slots per machine: ceil(5 / 2)
        (0, 4, 4, [P.PROVISIONING], 2, 1),
        (3, 2, 0, [], 1, 3),                        # (guarded by validation) min wins, as clamp says
    ],
)
def test_scale_up_follows_the_clamp(min_scale, max_scale, queued, states, slots, expected) -> None:  # type: ignore[no-untyped-def]
    machines = [machine(i + 1, s, running=1 if s == P.BUSY else 0) for i, s in enumerate(states)]
    instances = tuple(inst(m.id, PENDING if m.state in P.BOOTING else RUNNING, age=5) for m in machines
                      if m.state != P.REQUESTED)
    e = env(min_scale=min_scale, max_scale=max_scale, queued=queued, slots=slots, instances=instances)
    assert launches(decide(e, *machines)) == expected


def test_ready_machines_take_queued_work_before_anything_is_launched() -> None:
    e = env(queued=3, queued_head=(10, 11, 12), instances=(inst(1), inst(2)))
    actions = decide(e, machine(1, P.READY), machine(2, P.BUSY, running=1))
    assert [(a.execution_id, a.machine_id) for a in actions if isinstance(a, P.Dispatch)] == [(10, 1)]
    assert launches(actions) == 2


def test_dispatch_fills_free_slots_in_queue_order_busiest_machine_first() -> None:
    e = env(slots=2, queued=3, queued_head=(7, 8, 9), instances=(inst(1), inst(2)))
    actions = decide(e, machine(1, P.READY), machine(2, P.BUSY, running=1))
    assert [(a.execution_id, a.machine_id) for a in actions if isinstance(a, P.Dispatch)] == [(7, 2), (8, 1), (9, 1)]


# -- idle scale-down -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("idle_for", "min_scale", "queued", "retired"),
    [
        (601, 0, 0, True),     # idle longer than the timeout
        (599, 0, 0, False),    # not yet
        (601, 1, 0, False),    # never below min_scale
        (601, 0, 1, False),    # something waits: it gets work instead
    ],
)
def test_idle_machine_is_retired_only_past_the_timeout_above_min_scale(idle_for, min_scale, queued, retired) -> None:  # type: ignore[no-untyped-def]
    e = env(min_scale=min_scale, queued=queued, queued_head=(5,) if queued else (), instances=(inst(1),))
    actions = decide(e, machine(1, P.READY, idle_since=ago(idle_for)))
    assert any(isinstance(a, P.Retire) for a in actions) == retired
    assert launches(actions) == 0  # no launch/retire loop either way


def test_retire_carries_the_cutoff_the_store_rechecks() -> None:
    e = env(instances=(inst(1),))
    (retire,) = [a for a in decide(e, machine(1, P.READY, idle_since=ago(900))) if isinstance(a, P.Retire)]
    assert retire.idle_before == ago(600)


def test_the_longest_idle_machines_go_first_and_min_scale_stays() -> None:
    e = env(min_scale=1, instances=(inst(1), inst(2), inst(3)))
    actions = decide(e, machine(1, P.READY, idle_since=ago(700)), machine(2, P.READY, idle_since=ago(3000)),
                     machine(3, P.READY, idle_since=ago(900)))
    assert [a.machine_id for a in actions if isinstance(a, P.Retire)] == [2, 3]


def test_a_busy_machine_whose_work_ended_becomes_idle() -> None:
    assert kinds(decide(env(instances=(inst(1),)), machine(1, P.BUSY, running=0))) == ["MarkIdle"]


# -- the cloud's listing ---------------------------------------------------------------------------

def test_an_instance_of_a_waiting_row_is_adopted_and_not_launched_again() -> None:
    e = env(queued=1, instances=(inst(1, PENDING, age=3),))
    actions = decide(e, machine(1, P.REQUESTED, instance_id=None, state_changed_at=ago(3)))
    assert kinds(actions) == ["Adopt"]


def test_a_booted_instance_advances_its_machine() -> None:
    actions = decide(env(instances=(inst(1, RUNNING),)), machine(1, P.PROVISIONING))
    assert [(type(a).__name__, a.state) for a in actions] == [("Advance", P.READY)]  # type: ignore[attr-defined]
    actions = decide(env(needs_bootstrap=True, instances=(inst(1, RUNNING),)), machine(1, P.PROVISIONING))
    assert [(type(a).__name__, a.state) for a in actions] == [("Advance", P.BOOTSTRAPPING)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("instances", "expected"),
    [
        ((), "the instance vanished"),
        ((inst(1, TERMINATED, state_reason="Server.SpotInstanceTermination"),), "Server.SpotInstanceTermination"),
    ],
)
def test_a_row_whose_instance_vanished_is_lost(instances, expected) -> None:  # type: ignore[no-untyped-def]
    actions = decide(env(queued=0, instances=instances), machine(1, P.BUSY, running=1))
    lost = [a for a in actions if isinstance(a, P.MarkLost)]
    assert [(a.machine_id, a.reason) for a in lost] == [(1, expected)]


def test_orphans_are_terminated_only_after_the_grace_period() -> None:
    young = inst(99, iid="i-young", age=30)
    old = inst(98, iid="i-old", age=300)
    untagged = inst(None, iid="i-untagged", age=300)
    actions = decide(env(instances=(young, old, untagged)), grace=120)
    assert sorted(a.instance_id for a in actions if isinstance(a, P.TerminateOrphan)) == ["i-old", "i-untagged"]


def test_a_second_instance_for_the_same_row_is_an_orphan() -> None:
    actions = decide(env(instances=(inst(1, iid="i-1"), inst(1, iid="i-dup", age=300))), machine(1, P.READY))
    assert [a.instance_id for a in actions if isinstance(a, P.TerminateOrphan)] == ["i-dup"]


def test_instances_of_failed_or_lost_rows_are_orphans() -> None:
    actions = decide(env(instances=(inst(5, age=300),)), machine(5, "failed", instance_id=None))
    assert [a.instance_id for a in actions if isinstance(a, P.TerminateOrphan)] == ["i-5"]


def test_termination_is_confirmed_only_when_the_listing_no_longer_shows_it() -> None:
    asked = machine(1, P.TERMINATING, retry_at=ago(-30))  # asked; look again in 30 s
    assert kinds(decide(env(instances=(inst(1),)), asked)) == []
    assert kinds(decide(env(instances=(inst(1, TERMINATED),)), asked)) == ["ConfirmTerminated"]
    retry = machine(1, P.TERMINATING, retry_at=ago(1))
    assert kinds(decide(env(instances=(inst(1),)), retry)) == ["Terminate"]


def test_a_termination_never_asked_for_is_asked_for() -> None:
    """A daemon killed between marking a machine `terminating` and asking the cloud left no retry time."""
    never_asked = machine(1, P.TERMINATING, retry_at=None)
    assert kinds(decide(env(instances=(inst(1),)), never_asked)) == ["Terminate"]


def test_a_failed_listing_changes_nothing_about_the_machines() -> None:
    actions = decide(env(instances=None), machine(1, P.PROVISIONING), machine(2, P.TERMINATING))
    assert kinds(actions) == []


# -- deadlines ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("state", "age", "expected"),
    [
        (P.REQUESTED, 301, "FailMachine"),
        (P.REQUESTED, 299, None),
        (P.PROVISIONING, 601, "Terminate"),
        (P.BOOTSTRAPPING, 1201, "Terminate"),
        (P.BOOTSTRAPPING, 1199, None),
    ],
)
def test_machines_that_miss_a_deadline_are_failed_or_terminated(state, age, expected) -> None:  # type: ignore[no-untyped-def]
    instance_state = PENDING
    m = machine(1, state, state_changed_at=ago(age), instance_id=None if state == P.REQUESTED else "i-1")
    e = env(cloud="aws", instances=() if state == P.REQUESTED else (inst(1, instance_state),))
    got = [type(a).__name__ for a in decide(e, m) if isinstance(a, (P.FailMachine, P.Terminate))]
    assert got == ([expected] if expected else [])


def test_a_machine_that_misses_its_deadline_is_replaced() -> None:
    m = machine(1, P.REQUESTED, instance_id=None, state_changed_at=ago(301))
    actions = decide(env(queued=1), m)
    assert kinds(actions) == ["FailMachine", "Launch"]


# -- launch failures ---------------------------------------------------------------------------------

def failure(kind: str, age: float, zone: str | None = None, itype: str | None = None) -> P.FailureView:
    return P.FailureView(time=ago(age), kind=kind, zone=zone, instance_type=itype, message=f"{kind} trouble")


def test_a_capacity_error_in_one_zone_moves_to_the_next() -> None:
    e = env(queued=1, zones=("a", "b"), instance_types=("g5",), failures=(failure("capacity", 10, "a", "g5"),))
    (launch,) = [a for a in decide(e) if isinstance(a, P.Launch)]
    assert (launch.zone, launch.instance_type) == ("b", "g5")


def test_every_zone_blocked_falls_back_to_the_next_instance_type() -> None:
    e = env(queued=1, zones=("a", "b"), instance_types=("g5", "g4"),
            failures=(failure("capacity", 10, "a", "g5"), failure("capacity", 5, "b", "g5")))
    (launch,) = [a for a in decide(e) if isinstance(a, P.Launch)]
    assert (launch.zone, launch.instance_type) == ("a", "g4")


def test_capacity_blocks_expire() -> None:
    e = env(queued=1, zones=("a",), failures=(failure("capacity", 301, "a", None),), capacity_block_s=300)
    assert launches(decide(e)) == 1
    e = env(queued=1, zones=("a",), failures=(failure("capacity", 299, "a", None),), capacity_block_s=300)
    assert launches(decide(e)) == 0


@pytest.mark.parametrize(
    ("failures", "updated_ago", "launched"),
    [
        ((failure("transient", 3),), None, 0),                      # backing off 5 s
        ((failure("transient", 6),), None, 1),
        ((failure("transient", 30), failure("transient", 8)), None, 0),  # second in a row: 10 s
        ((failure("quota", 60),), None, 0),                         # quota: blocked for capacity_block
        ((failure("fatal", 3600),), None, 0),                       # fatal: stopped until updated
        ((failure("fatal", 3600),), 60, 1),                         # ... and the update lifts it
    ],
)
def test_transient_quota_and_fatal_failures_pause_launching(failures, updated_ago, launched) -> None:  # type: ignore[no-untyped-def]
    e = env(queued=1, failures=failures, updated_at=ago(updated_ago) if updated_ago else ago(7200))
    assert launches(decide(e)) == launched
    if not launched:
        assert P.launch_blocked(e, NOW) is not None


def test_a_draining_environment_launches_nothing_and_retires_idle_machines_at_once() -> None:
    e = env(min_scale=2, draining=True, instances=(inst(1),))
    actions = decide(e, machine(1, P.READY, idle_since=ago(1)))
    assert kinds(actions) == ["Retire"]


def test_the_local_environment_only_dispatches() -> None:
    e = env(cloud="local", min_scale=1, max_scale=1, queued=2, queued_head=(1, 2), instances=None)
    actions = decide(e, machine(1, P.READY, idle_since=ago(99999)))
    assert kinds(actions) == ["Dispatch"]
