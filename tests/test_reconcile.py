"""Reconcile passes against the fake cloud on a virtual clock, with real SQLite state.

Executions are "run" by a stand-in host that the test completes by hand; the machines,
the cloud's listing, the launches and terminations are all real code paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import migrated_sqlite
from vh_orch.cloud_drivers.fake import FakeCloud, FakeDriver
from vh_orch.config.environments import parse_entry
from vh_orch.orchestrator.db import upgrade
from vh_orch.orchestrator.drivers import Drivers
from vh_orch.orchestrator.models import Environment, Execution, Machine
from vh_orch.orchestrator.reconcile import Reconciler
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.database import Fence

STEP_YAML = "- step:\n    name: s\n    image: busybox\n    command: echo hi\n"


class VirtualClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class StandInHost:
    """Records what the reconciler starts; the test decides when each execution ends."""

    store: Store
    running: dict[int, Execution] = field(default_factory=dict)
    abandoned: list[int] = field(default_factory=list)
    machines_used: set[int] = field(default_factory=set)

    def run_execution(self, execution: Execution, env: Environment, machine: Machine,
                      fence: Fence | None = None) -> None:
        self.running[execution.id] = execution  # type: ignore[index]
        self.machines_used.add(machine.id)  # type: ignore[arg-type]

    def abandon(self, execution_ids: list[int], reason: str) -> None:
        for eid in execution_ids:
            self.running.pop(eid, None)
            self.abandoned.append(eid)

    def complete_all(self) -> None:
        for eid, execution in list(self.running.items()):
            self.store.finish_execution(eid, execution.attempt, "complete", None, 0)
            del self.running[eid]


@dataclass
class World:
    store: Store
    clock: VirtualClock
    cloud: FakeCloud
    host: StandInHost
    reconciler: Reconciler
    env: Environment
    project_id: int
    commit_id: int

    def submit(self, n: int = 1) -> list[int]:
        ids = []
        for _ in range(n):
            e = self.store.create_execution(Execution(
                project_id=self.project_id, counter=0, commit_id=self.commit_id, step="s", command="echo hi",
                environment_id=self.env.id, user="tester"))  # type: ignore[arg-type]
            ids.append(e.id)
        return ids  # type: ignore[return-value]

    def run(self, passes: int = 1, step_s: float = 1.0) -> None:
        for _ in range(passes):
            self.reconciler.run_pass()
            self.clock.advance(step_s)

    def machines(self, *states: str) -> list[Machine]:
        rows = [m for m, _ in self.store.list_machines(include_finished=True) if m.environment_id == self.env.id]
        return [m for m in rows if not states or m.state in states]

    def live_instances(self) -> list[str]:
        return sorted(i.instance_id for i in self.cloud.live(self.env.name))

    def assert_one_instance_per_live_row(self) -> None:
        """No row has two instances, no instance lacks a live row, no live row lost its instance."""
        live_rows = self.machines("requested", "provisioning", "bootstrapping", "ready", "busy", "terminating")
        instances = self.cloud.live(self.env.name)
        owners = [int(i.tags["vh-orch-machine"]) for i in instances]
        assert len(set(owners)) == len(owners), "a row with two instances"
        assert set(owners) <= {m.id for m in live_rows}, "an instance without a live row (an orphan)"
        listed = {i.instance_id for i in instances}
        assert all(m.instance_id in listed for m in live_rows if m.instance_id and m.state != "terminating")


def make_world(tmp_path: Path, state_file: Path | None = None, url: str | None = None,  # type: ignore[no-untyped-def]
               **env_keys) -> World:
    if url is None:
        url = migrated_sqlite(tmp_path / "state.db")
    else:
        upgrade(url)
    clock = VirtualClock()
    store = Store(url, clock=clock)
    entry = {"name": "gpu", "cloud": "fake", "max_scale": 2, "idle_timeout": "10m", "fake": {"boot_seconds": 30}}
    entry.update(env_keys)
    spec = parse_entry(entry, "test")
    store.save_environment(spec.name, spec.cloud, spec.columns, spec.settings)
    env = store.get_environment("gpu")
    project = store.create_project("p", None, None)
    commit = store.get_or_create_commit(project.id, "adhoc", "abc", STEP_YAML)  # type: ignore[arg-type]
    cloud = FakeCloud(clock=clock, state_file=state_file)
    host = StandInHost(store)
    boot = spec.settings["fake"]["boot_seconds"]
    reconciler = Reconciler(store, host, clock=clock, orphan_grace_s=60,
                            drivers=Drivers(store.cluster_id(), {env.id: FakeDriver(cloud, store.cluster_id(), "gpu", boot)}))  # type: ignore[dict-item]
    return World(store, clock, cloud, host, reconciler, env, project.id, commit.id)  # type: ignore[arg-type]


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    """The scenarios on both databases (db_url: SQLite, then a fresh PostgreSQL database)."""
    yield make_world(tmp_path, url=db_url)


def test_a_burst_scales_to_max_and_back_to_min_after_the_idle_timeout(tmp_path: Path) -> None:
    w = make_world(tmp_path, min_scale=1, max_scale=3, idle_timeout="10m")
    peak = 0
    w.run(40)
    assert len(w.machines("ready")) == 1  # min_scale, before any work
    w.submit(10)
    for _ in range(200):
        w.run(1, step_s=5)
        live = w.machines("requested", "provisioning", "ready", "busy")
        assert 1 <= len(live) <= 3
        peak = max(peak, len(live))
        w.host.complete_all()
        if all(w.store.get_execution(i).status == "complete" for i in range(1, 11)):
            break
    assert peak == 3
    assert all(w.store.get_execution(i).status == "complete" for i in range(1, 11))
    w.run(130, step_s=5)  # well past the idle timeout
    assert len(w.machines("ready")) == 1
    assert len(w.live_instances()) == 1
    assert len(w.machines("terminated")) == 2
    w.assert_one_instance_per_live_row()


def test_five_executions_run_on_at_most_two_machines_which_are_then_terminated(world: World) -> None:
    ids = world.submit(5)
    for _ in range(100):
        world.run(1, step_s=10)
        assert len(world.live_instances()) <= 2
        world.host.complete_all()
    assert all(world.store.get_execution(i).status == "complete" for i in ids)
    assert len(world.host.machines_used) == 2
    world.run(70, step_s=10)
    assert world.live_instances() == []
    assert {m.state for m in world.machines()} == {"terminated"}


def test_an_orphan_instance_is_terminated_after_the_grace_period(world: World) -> None:
    from vh_orch.cloud_drivers.base import LaunchSpec

    world.cloud.run_instance(LaunchSpec(machine_id=999, launch_token="x", cluster_id=world.reconciler.cluster_id,
                                        environment="gpu", zone=None, instance_type=None), boot_seconds=0)
    foreign = world.cloud.run_instance(LaunchSpec(machine_id=1, launch_token="y", cluster_id="someone-else",
                                                  environment="gpu", zone=None, instance_type=None), boot_seconds=0)
    world.run(1, step_s=30)
    assert len(world.live_instances()) == 2  # within the grace period
    world.run(3, step_s=30)
    assert world.live_instances() == [foreign.instance_id]  # another installation's instance is never touched


@pytest.mark.parametrize("crash", ["before the cloud call", "after the cloud call"])
def test_a_crash_around_the_cloud_call_leaves_one_instance_per_row_and_no_orphan(world: World, crash: str) -> None:
    world.submit(1)
    if crash == "before the cloud call":
        # What a daemon killed right after writing the row leaves behind.
        world.store.create_machine(world.env, "fake-a", None)
    else:
        world.cloud.faults.raise_after_launch = 1
    world.run(1)
    world.assert_one_instance_per_live_row()
    # A fresh pass (a new reconciler: the daemon restarted) sorts it out.
    world.reconciler = Reconciler(world.store, world.host, clock=world.clock, orphan_grace_s=60,
                                  drivers=Drivers(world.reconciler.cluster_id, {
                                      world.env.id: FakeDriver(world.cloud, world.reconciler.cluster_id,  # type: ignore[dict-item]
                                                               "gpu", 30)}))
    for _ in range(80):
        world.run(1, step_s=5)
        world.assert_one_instance_per_live_row()
        world.host.complete_all()
    assert world.store.get_execution(1).status == "complete"
    launched = [m for m in world.machines() if m.instance_id]
    assert len(launched) == len(world.cloud.instances), "every instance ever launched belongs to exactly one row"


def test_a_replica_taking_over_sees_the_instances_the_old_one_launched(tmp_path: Path) -> None:
    state = tmp_path / "fake-cloud.json"
    w = make_world(tmp_path, state_file=state)
    ids = w.submit(3)
    w.run(40, step_s=1)
    assert len(w.machines("busy")) == 2
    # Another replica (its own FakeCloud on the same file, as in another process) takes the environment over.
    cloud = FakeCloud(clock=w.clock, state_file=state)
    w.cloud = cloud
    w.reconciler = Reconciler(w.store, w.host, clock=w.clock, orphan_grace_s=60,
                              drivers=Drivers(w.store.cluster_id(), {w.env.id: FakeDriver(cloud, w.store.cluster_id(), "gpu", 30)}))  # type: ignore[dict-item]
    for _ in range(100):
        w.run(1, step_s=5)
        w.assert_one_instance_per_live_row()
        w.host.complete_all()
    assert all(w.store.get_execution(i).status == "complete" for i in ids)
    assert w.machines("lost") == [], "the new owner took a live instance for a lost one"
    w.run(150, step_s=5)  # past the idle timeout
    launched = cloud.launched()
    assert len(launched) == 2, "the new owner launched machines the old one already had"
    assert {int(i.tags["vh-orch-machine"]) for i in launched} == {m.id for m in w.machines()}
    assert cloud.live() == [] and {m.state for m in w.machines()} == {"terminated"}


def test_a_capacity_error_in_one_zone_moves_to_the_next(tmp_path: Path) -> None:
    w = make_world(tmp_path, fake={"boot_seconds": 0, "zones": ["zone-a", "zone-b"]})
    w.cloud.faults.capacity_zones["zone-a"] = -1
    w.submit(1)
    w.run(4)
    w.host.complete_all()
    (machine,) = w.machines("ready", "busy")
    assert machine.zone == "zone-b"
    failures = w.store.recent_failures(w.env.id)  # type: ignore[arg-type]
    assert [(f.kind, f.zone) for f in failures] == [("capacity", "zone-a")]
    assert "InsufficientInstanceCapacity in zone-a" in failures[0].message
    assert [m.state for m in w.machines("failed")] == ["failed"]


def test_quota_exceeded_blocks_launching_with_the_reason(world: World) -> None:
    world.cloud.faults.quota_exceeded = 100
    world.submit(1)
    world.run(10, step_s=5)
    assert len(world.store.recent_failures(world.env.id)) == 1  # type: ignore[arg-type]
    assert world.live_instances() == []
    world.run(60, step_s=5)  # past capacity_block (300 s): it tries again
    assert len(world.store.recent_failures(world.env.id)) == 2  # type: ignore[arg-type]


def test_a_fatal_error_stops_launching_until_the_environment_is_updated(world: World) -> None:
    world.cloud.faults.fatal_errors = 1
    world.submit(1)
    world.run(20, step_s=30)
    assert world.live_instances() == []
    assert [f.kind for f in world.store.recent_failures(world.env.id)] == ["fatal"]  # type: ignore[arg-type]
    world.store.update_environment("gpu", {}, {})
    world.run(3, step_s=1)
    assert len(world.live_instances()) == 1


def test_a_spot_interruption_requeues_the_execution_and_it_completes(world: World) -> None:
    (eid,) = world.submit(1)
    world.run(40, step_s=1)
    assert eid in world.host.running
    (machine,) = world.machines("busy")
    world.cloud.vanish(machine.instance_id)  # type: ignore[arg-type]
    world.run(1)
    lost = world.store.get_execution(eid)
    assert lost.status == "queued" and "Server.SpotInstanceTermination" in (lost.status_reason or "")
    assert world.host.abandoned == [eid]
    assert world.machines("lost")[0].reason == "Server.SpotInstanceTermination"
    world.run(40, step_s=1)
    world.host.complete_all()
    done = world.store.get_execution(eid)
    assert done.status == "complete" and done.attempt == 2


def test_an_execution_whose_machines_keep_vanishing_errors_after_max_attempts(tmp_path: Path) -> None:
    w = make_world(tmp_path, max_attempts=2, fake={"boot_seconds": 0})
    (eid,) = w.submit(1)
    for _ in range(2):
        w.run(3)
        (machine,) = w.machines("busy")
        w.cloud.vanish(machine.instance_id)  # type: ignore[arg-type]
        w.run(1)
    execution = w.store.get_execution(eid)
    assert execution.status == "error"
    assert "on the last of 2 attempts" in (execution.status_reason or "")


def test_a_termination_that_fails_for_a_while_is_retried_until_confirmed(world: World) -> None:
    world.submit(1)
    world.run(40, step_s=1)
    world.host.complete_all()
    world.cloud.faults.terminate_failures = 3
    world.run(61, step_s=10)  # past the idle timeout: retire, and fail to terminate
    (machine,) = world.machines("terminating")
    assert machine.terminate_attempts >= 1 and "termination failed" in (machine.reason or "")
    world.run(60, step_s=10)
    assert [m.state for m in world.machines()] == ["terminated"]
    assert world.live_instances() == []


def test_a_machine_that_never_boots_is_terminated_at_its_deadline_and_replaced(tmp_path: Path) -> None:
    w = make_world(tmp_path, boot_timeout="2m", fake={"boot_seconds": 100000})
    w.submit(1)
    w.run(30, step_s=10)
    terminated = w.machines("terminated")
    assert terminated and "did not boot within 120 s" in (terminated[0].reason or "")
    w.assert_one_instance_per_live_row()


def test_a_retired_machine_that_just_took_work_is_not_terminated(world: World) -> None:
    world.submit(1)
    world.run(40, step_s=1)
    world.host.complete_all()
    world.run(1)
    (machine,) = world.machines("ready")
    # The policy saw it idle; before the retirement lands, it takes a new execution.
    world.clock.advance(700)
    world.submit(1)
    execution = world.store.claim_for_machine(2, machine.id, 1, "process")  # type: ignore[arg-type]
    assert execution is not None
    assert world.store.retire_if_idle(machine.id, world.clock() - timedelta(seconds=600), "idle") is None  # type: ignore[arg-type]
    assert world.machines("busy")


def test_a_machines_share_is_claimed_in_one_write_in_order_up_to_its_free_slots(world: World) -> None:
    """claim_on_machine: in the order given; one no longer queued (or named twice) is passed over;
    no more than the machine's free slots; each claimed one is started once, with its status event."""
    world.submit(1)
    world.run(40, step_s=1)  # a machine, running the first
    (machine,) = world.machines("busy")
    ids = world.submit(5)
    world.store.request_stop(ids[1], "stopped before it ran")
    claimed = world.store.claim_on_machine([ids[2], ids[1], ids[2], ids[0], ids[3], ids[4]], machine.id, 4,  # type: ignore[arg-type]
                                           "process")
    assert [e.id for e in claimed] == [ids[2], ids[0], ids[3]]  # 3 free slots of 4
    assert [world.store.get_execution(i).status for i in ids] == ["started", "stopped", "started", "started", "queued"]
    assert all(e.attempt == 1 and e.machine_id == machine.id for e in claimed)
    assert world.store.claim_on_machine([ids[4]], machine.id, 4, "process") == []  # type: ignore[arg-type]
    for i in (ids[2], ids[0], ids[3]):
        assert [e.text for e in world.store.events_after(i, 0) if e.kind == "status"].count("started") == 1


def test_quota_holds_executions_as_created_and_admits_them_in_order(world: World) -> None:
    world.store.set_quota("tester", 2)
    ids = world.submit(4)
    assert [world.store.get_execution(i).status for i in ids] == ["queued", "queued", "created", "created"]
    world.run(40, step_s=1)
    world.host.complete_all()
    world.run(1)
    statuses = [world.store.get_execution(i).status for i in ids]
    assert statuses[:2] == ["complete", "complete"] and "created" not in statuses


def test_listing_failures_change_nothing(world: World) -> None:
    world.submit(1)
    world.run(40, step_s=1)
    world.cloud.faults.list_errors = 5
    before = [(m.id, m.state) for m in world.machines()]
    world.run(5)
    assert [(m.id, m.state) for m in world.machines()] == before



def test_runners_start_on_idle_worker_threads_which_end_when_idle_long_enough() -> None:
    """Workers: a second wave of work runs on the first wave's threads (no new thread while one is
    idle); each thread carries its task's name while it runs; a task that raises leaves its worker
    working; a worker idle for idle_s ends."""
    import threading

    from conftest import eventually
    from vh_orch.orchestrator.workers import Workers

    workers = Workers(idle_s=0.5)
    release = threading.Event()
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def task(name: str) -> None:
        with lock:
            seen[name] = threading.get_ident()
        assert threading.current_thread().name == name
        release.wait(10)

    for i in range(4):
        workers.submit(lambda i=i: task(f"first-{i}"), f"first-{i}")  # type: ignore[misc]
    eventually("4 tasks running at once", lambda: len(seen) == 4)
    first = set(seen.values())
    assert len(first) == 4
    release.set()
    eventually("the 4 workers idle", lambda: workers._idle == 4)
    workers.submit(lambda: 1 / 0, "raises")
    for i in range(3):
        workers.submit(lambda i=i: task(f"second-{i}"), f"second-{i}")  # type: ignore[misc]
    eventually("the second wave run", lambda: len(seen) == 7 and workers._idle == 4)
    assert {seen[f"second-{i}"] for i in range(3)} <= first  # no new thread
    eventually("idle workers end", lambda: not first & {t.ident for t in threading.enumerate()}, timeout=10)
    assert workers._idle == 0
    workers.submit(lambda: task("after"), "after")
    eventually("a new worker for new work", lambda: "after" in seen)
