"""Leases and fencing on both databases: who owns an environment or an execution, take-over when
an owner stops or its lease expires, and the writes of a replica that lost its lease refused.

The store runs on a virtual clock, so expiry is a clock step rather than a wait.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vh_orch.errors import LeaseLost, UserInputError
from vh_orch.orchestrator.db import upgrade
from vh_orch.orchestrator.models import Execution
from vh_orch.orchestrator.store import LogLine, Store
from vh_orch.orchestrator.store.database import Fence
from vh_orch.orchestrator.store.leases import CLUSTER, env_key, exec_key


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def world(db_url: str) -> tuple[Store, Clock]:
    upgrade(db_url)
    clock = Clock()
    return Store(db_url, clock=clock), clock


def replica(store: Store, pid: int, host: str = "host-a") -> int:
    from vh_orch.orchestrator.models import DaemonHeartbeat

    with store.write() as s:
        beat = DaemonHeartbeat(pid=pid, hostname=host, started_at=store.clock(), heartbeat_at=store.clock())
        s.add(beat)
        s.flush()
        return beat.id  # type: ignore[return-value]


def started_execution(store: Store, owner: int) -> tuple[int, int, Fence]:
    """A queued execution claimed on a ready machine by `owner`'s reconcile: (execution, machine, env fence)."""
    project = store.create_project(f"p{owner}", None, None)
    commit = store.get_or_create_commit(project.id, "adhoc", "abc", "- step: {name: s, image: x, command: c}")  # type: ignore[arg-type]
    env, _ = store.ensure_environment(f"env{owner}", "fake")
    fence = Fence(env_key(env.id), owner, store.take_leases(owner, [env_key(env.id)])[env_key(env.id)])  # type: ignore[arg-type]
    machine = store.ensure_host_machine(env, "h")
    execution = store.create_execution(Execution(project_id=project.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                                 command="c", environment_id=env.id, status="queued"))  # type: ignore[arg-type]
    claimed = store.fenced(fence).claim_for_machine(execution.id, machine.id, 1, "process")  # type: ignore[arg-type]
    assert claimed is not None and claimed.status == "started"
    return execution.id, machine.id, fence  # type: ignore[return-value]


def test_a_lease_is_held_by_one_replica_until_it_expires_then_taken_with_a_new_token(world) -> None:  # type: ignore[no-untyped-def]
    store, clock = world
    a, b = replica(store, 1001), replica(store, 1002)
    assert store.take_leases(a, [CLUSTER, "env:1"], lease_s=15) == {CLUSTER: 1, "env:1": 1}
    assert store.take_leases(b, [CLUSTER, "env:1"], lease_s=15) == {}
    clock.step(10)
    assert store.renew_leases(a, lease_s=15) == {CLUSTER, "env:1"}
    clock.step(10)  # 20 s after the take, 10 after the renewal: still a's
    assert store.take_leases(b, [CLUSTER], lease_s=15) == {}
    clock.step(6)
    assert store.take_leases(b, [CLUSTER], lease_s=15) == {CLUSTER: 2}
    assert store.renew_leases(a, lease_s=15) == {"env:1"}, "a renewal must not win back a lease that was taken"
    assert store.take_leases(a, [CLUSTER], lease_s=15) == {}


def test_a_limit_caps_how_many_leases_a_replica_takes_and_held_ones_count_first(world) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    a, b = replica(store, 1001), replica(store, 1002)
    keys = [env_key(i) for i in range(1, 6)]
    assert store.take_leases(a, keys[3:], limit=3) == {"env:4": 1, "env:5": 1}
    held = store.take_leases(a, keys, limit=3)
    assert set(held) >= {"env:4", "env:5"} and len(held) == 3
    assert len(store.take_leases(b, keys, limit=3)) == 2


def test_a_released_lease_goes_to_another_replica_not_back_to_its_owner(world) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    a, b = replica(store, 1001), replica(store, 1002)
    store.take_leases(a, ["env:1", "env:2"])
    store.release_leases(a, ["env:2"])
    assert store.take_leases(a, ["env:1", "env:2"], limit=1) == {"env:1": 1}
    assert store.take_leases(b, ["env:1", "env:2"]) == {"env:2": 2}


def test_leases_of_a_stopped_replica_are_free_at_once(world) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    a, b = replica(store, 1001), replica(store, 1002)
    store.take_leases(a, ["env:7"])
    store.daemon_stopped(a)
    assert store.take_leases(b, ["env:7"]) == {"env:7": 2}


def test_replicas_on_this_host_whose_process_is_gone_are_marked_stopped(world) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    gone, alive, elsewhere = replica(store, 1001), replica(store, 1002), replica(store, 1003, host="host-b")
    assert store.mark_dead_replicas("host-a", lambda pid: pid == 1002) == [gone]
    assert [r.id for r in store.replicas(timedelta(seconds=10))] == [alive, elsewhere]


def test_a_fenced_write_is_refused_once_the_lease_is_taken_and_changes_nothing(world) -> None:  # type: ignore[no-untyped-def]
    store, clock = world
    a, b = replica(store, 1001), replica(store, 1002)
    execution_id, machine_id, env_fence = started_execution(store, a)
    token = store.lease_token(exec_key(execution_id), a)
    assert token is not None
    runner_a = store.fenced(Fence(exec_key(execution_id), a, token))
    runner_a.append_log(execution_id, [LogLine(clock(), "stdout", "from a")])
    clock.step(20)  # a was paused past its lease
    assert [e.id for e in store.unowned_executions()] == [execution_id]
    assert store.take_over(execution_id, b) == token + 1
    assert store.unowned_executions() == []
    with pytest.raises(LeaseLost):
        runner_a.append_log(execution_id, [LogLine(clock(), "stdout", "stale line")])
    with pytest.raises(LeaseLost):
        runner_a.finish_execution(execution_id, 1, "complete", None, 0)
    assert store.take_leases(b, [env_fence.key]) == {env_fence.key: env_fence.token + 1}
    with pytest.raises(LeaseLost):
        store.fenced(env_fence).advance_machine(machine_id, "terminating", None, "stale")
    texts = [e.text for e in store.events_after(execution_id, 0) if e.kind == "log"]
    assert texts == ["from a"]
    assert store.get_execution(execution_id).status == "started"
    runner_b = store.fenced(Fence(exec_key(execution_id), b, token + 1))
    assert runner_b.finish_execution(execution_id, 1, "complete", None, 0)
    assert store.get_execution(execution_id).status == "complete"


def test_a_claims_fence_is_trusted_by_lone_checks_while_fresh_and_never_by_writes(world) -> None:  # type: ignore[no-untyped-def]
    """A claim hands its runners fences fresh for `fresh_s` from before its write: a runner's lone
    check (before it starts a command) trusts one that fresh without a read; once stale it reads, and
    a write always checks the row."""
    store, clock = world
    a, b = replica(store, 1001), replica(store, 1002)
    project = store.create_project("p", None, None)
    commit = store.get_or_create_commit(project.id, "adhoc", "abc", "- step: {name: s, image: x, command: c}")  # type: ignore[arg-type]
    env, _ = store.ensure_environment("env", "fake")
    env_fence = Fence(env_key(env.id), a, store.take_leases(a, [env_key(env.id)])[env_key(env.id)])  # type: ignore[arg-type]
    machine = store.ensure_host_machine(env, "h")
    execution = store.create_execution(Execution(project_id=project.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                                 command="c", environment_id=env.id, status="queued"))  # type: ignore[arg-type]
    began = time.monotonic()
    [(claimed, fence)] = store.fenced(env_fence).claim_leased([execution.id], machine.id, 1, "process",  # type: ignore[list-item]
                                                              fresh_s=60)
    assert fence is not None and (fence.key, fence.owner) == (exec_key(execution.id), a)  # type: ignore[arg-type]
    assert fence.token == store.lease_token(fence.key, a)
    assert began <= fence.fresh_until - 60 <= time.monotonic()
    clock.step(20)  # past the lease by the database's clock: b takes it over
    assert store.take_over(execution.id, b) == fence.token + 1  # type: ignore[arg-type]
    runner = store.fenced(fence)
    runner.check_fence()  # fresh: trusted without a read
    with pytest.raises(LeaseLost):
        runner.finish_execution(execution.id, 1, "complete", None, 0)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost):
        store.fenced(replace(fence, fresh_until=0.0)).check_fence()  # stale: read, and found taken
    assert store.get_execution(execution.id).status == "started"  # type: ignore[arg-type]


def test_an_execution_that_ends_gives_its_lease_to_nobody(world) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    a = replica(store, 1001)
    execution_id, _, _ = started_execution(store, a)
    token = store.lease_token(exec_key(execution_id), a)
    store.fenced(Fence(exec_key(execution_id), a, token)).finish_execution(execution_id, 1, "complete", None, 0)  # type: ignore[arg-type]
    assert store.lease_token(exec_key(execution_id), a) is None
    assert store.renew_leases(a) == {env_key(store.get_environment(f"env{a}").id)}  # type: ignore[arg-type]
    assert store.take_over(execution_id, a) is None, "a finished execution is nobody's to take over"


def test_concurrent_replicas_never_both_take_one_lease(world) -> None:  # type: ignore[no-untyped-def]
    """Threads on separate connections race for the same keys, round after round: one wins each."""
    store, _ = world
    owners = [replica(store, 2000 + i) for i in range(4)]
    for round_ in range(15):
        key = f"env:{100 + round_}"
        results: dict[int, dict[str, int]] = {}
        barrier = threading.Barrier(len(owners))

        def take(owner: int) -> None:
            barrier.wait()
            results[owner] = Store(store.url, clock=store.clock).take_leases(owner, [key])

        threads = [threading.Thread(target=take, args=(o,)) for o in owners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sum(1 for r in results.values() if key in r) == 1, results


def test_sqlite_has_one_daemon_and_postgresql_has_replicas(world) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    first = store.register_daemon(timedelta(seconds=10))
    if store.engine.dialect.name == "sqlite":
        with pytest.raises(UserInputError, match="several replicas share a PostgreSQL"):
            store.register_daemon(timedelta(seconds=10))
    else:
        second = store.register_daemon(timedelta(seconds=10))
        assert second.id != first.id
        assert {r.id for r in store.replicas(timedelta(seconds=10))} == {first.id, second.id}


def test_a_killed_replica_not_yet_reaped_counts_as_gone() -> None:
    """A zombie (SIGKILLed, its parent has not waited yet) runs nothing: its leases are free at once."""
    import signal
    import subprocess

    from vh_orch.orchestrator.store.core import _pid_alive

    child = subprocess.Popen(["sleep", "60"])
    try:
        assert _pid_alive(child.pid)
        child.send_signal(signal.SIGKILL)
        for _ in range(200):  # until the kernel has made it a zombie (bounded: 2 s)
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            threading.Event().wait(0.01)
        assert not _pid_alive(child.pid)
    finally:
        child.kill()
        child.wait(10)
    assert not _pid_alive(child.pid)


def test_a_write_left_idle_is_ended_by_the_server_and_a_read_is_not(postgres: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica paused inside a write holds the writers' lock: PostgreSQL ends that transaction
    after a third of the lease and the next writer goes on. A read holds no lock, so a reader that
    takes its time (a CLI paging a long log into `less`) is never cut off."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    monkeypatch.setenv("VH_ORCH_LEASE_S", "3")  # writes idle for a second are ended
    url = postgres.new_database()
    paused, other = Store(url), Store(url)
    entered = threading.Event()
    outcome: list[BaseException | None] = []

    def pause_inside_a_write() -> None:
        try:
            with paused.write() as s:  # takes the database-wide writers' advisory lock
                s.exec(text("SELECT 1"))  # type: ignore[call-overload]
                entered.set()
                time.sleep(2.5)
            outcome.append(None)
        except DBAPIError as exc:
            outcome.append(exc)

    writer = threading.Thread(target=pause_inside_a_write)
    writer.start()
    assert entered.wait(30)
    with other.write() as s:  # waits for the lock until the server ends the paused transaction
        assert s.exec(text("SELECT 1")).one() == (1,)  # type: ignore[call-overload]
    writer.join(30)
    assert outcome and isinstance(outcome[0], DBAPIError) and "idle" in str(outcome[0]).lower(), outcome

    with paused.read() as s:
        s.exec(text("SELECT 1"))  # type: ignore[call-overload]
        time.sleep(2.5)
        assert s.exec(text("SELECT 2")).one() == (2,)  # type: ignore[call-overload]
