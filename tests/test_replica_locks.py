"""The write locks of replicas on one real PostgreSQL (store/database.py, "Locks"): writers of
different environments go at once, writers of one environment take turns, and a database-wide
writer waits for both; the rules the locks keep hold with several replicas writing at once:
no execution claimed twice, no machine given more work than its slots and GPUs, no machine
retired while a claim puts work on it, quotas admitting exactly up to the limit when replicas
submit in different environments at once, and a project's dataset versions made once when
executions of two environments end at once.

Each replica is a thread with connections of its own: the locks are the server's, per
connection, so threads race on them as processes would. A barrier starts each race.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, text
from sqlmodel import col, select

from vh_orch.orchestrator.db import upgrade
from vh_orch.orchestrator.models import Dataset, DatasetVersion, Environment, Execution, ExecutionEvent, Machine, Output
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.database import ALL, ROWS, environment, machine_environment

RACE_S = 60  # the bound on any one wait: a race that deadlocks fails instead of hanging


@pytest.fixture
def store(postgres: Any, monkeypatch: pytest.MonkeyPatch) -> Store:
    # A transaction left idle is ended after a third of the lease: the tests below hold some on purpose.
    monkeypatch.setenv("VH_ORCH_LEASE_S", "180")
    url = postgres.new_database()
    upgrade(url)
    return Store(url)


def race(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs at once, each in a thread of its own; their results (an exception fails the test)."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int, job: Callable[[], Any]) -> None:
        try:
            barrier.wait(RACE_S)
            results[i] = job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RACE_S * 2)
    assert not any(t.is_alive() for t in threads), "a writer never finished (a lock that is never let go?)"
    assert not errors, errors
    return results


def setup(store: Store, envs: int, machines: int = 1, gpus: int = 0) -> tuple[int, int, list[Environment], dict[int, list[int]]]:
    """A project and commit, `envs` environments with `machines` ready machines each: (project,
    commit, environments, machine ids by environment id)."""
    project = store.create_project("p", None, None)
    commit = store.get_or_create_commit(project.id, "adhoc", "abc", "- step: {name: s, image: x, command: c}")  # type: ignore[arg-type]
    made = [store.ensure_environment(f"env{i}", "fake", max_scale=machines, slots=3)[0] for i in range(envs)]
    by_env: dict[int, list[int]] = {}
    with store.write() as s:
        for env in made:
            rows = [Machine(environment_id=env.id, state="ready", gpus=gpus, instance_id=f"i-{env.id}-{i}",  # type: ignore[arg-type]
                            idle_since=store.clock() - timedelta(hours=1), created_at=store.clock(),
                            state_changed_at=store.clock()) for i in range(machines)]
            s.add_all(rows)
            s.flush()
            by_env[env.id] = [m.id for m in rows]  # type: ignore[index,misc]
    return project.id, commit.id, made, by_env  # type: ignore[return-value]


def submit(store: Store, project: int, commit: int, env: int, gpus: int = 0, user: str = "u") -> Execution:
    return store.create_execution(Execution(project_id=project, counter=0, commit_id=commit, step="s", command="c",
                                            environment_id=env, gpus=gpus, user=user))


def running_on(store: Store) -> dict[int, list[Execution]]:
    with store.read() as s:
        found: dict[int, list[Execution]] = {}
        for e in s.exec(select(Execution).where(col(Execution.status).in_(["started", "stopping"]))):
            found.setdefault(e.machine_id, []).append(e)  # type: ignore[arg-type]
        return found


def waiting_backends(store: Store) -> int:
    """Connections of this database that wait for an advisory lock."""
    with store.read() as s:
        return s.exec(text(  # type: ignore[call-overload]
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()")).one()[0]


def until(what: str, ready: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(int(RACE_S / 0.02)):
        if ready():
            return
        done.wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Holder:
    """A write transaction under `lock`, held open in a thread of its own until let go."""

    def __init__(self, store: Store, lock: Any) -> None:
        self.inside, self.go, self.done = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, args=(store, lock))
        self.thread.start()

    def _run(self, store: Store, lock: Any) -> None:
        with store.write(lock):
            self.inside.set()
            self.go.wait(RACE_S)
        self.done.set()

    def let_go(self) -> None:
        self.go.set()
        self.thread.join(RACE_S)
        assert self.done.is_set()


def test_writers_of_different_environments_go_at_once_and_of_one_environment_or_all_take_turns(store: Store) -> None:
    _, _, (a, b), machines = setup(store, 2)
    holder = Holder(store, environment(a.id))  # type: ignore[arg-type]
    assert holder.inside.wait(RACE_S)

    other = Holder(store, machine_environment(machines[b.id][0]))  # another environment's machine: no wait
    assert other.inside.wait(RACE_S), "a write in another environment waited for this one's writer"
    other.let_go()

    same = Holder(store, machine_environment(machines[a.id][0]))  # the same environment's machine: waits
    everything = Holder(store, ALL)
    until("both to wait for the lock", lambda: waiting_backends(store) == 2)
    assert not same.inside.is_set() and not everything.inside.is_set()
    holder.let_go()
    until("one of them to go in", lambda: same.inside.is_set() or everything.inside.is_set())
    # ALL and the environment's writer exclude each other: one at a time, in either order.
    first, second = (same, everything) if same.inside.is_set() else (everything, same)
    assert not second.inside.is_set()
    first.let_go()
    assert second.inside.wait(RACE_S)
    second.let_go()

    # And an environment's writer waits for a database-wide one.
    everything = Holder(store, ALL)
    assert everything.inside.wait(RACE_S)
    env_writer = Holder(store, environment(b.id))  # type: ignore[arg-type]
    until("the environment's writer to wait", lambda: waiting_backends(store) == 1)
    assert not env_writer.inside.is_set()
    everything.let_go()
    assert env_writer.inside.wait(RACE_S)
    env_writer.let_go()


def test_replicas_claiming_at_once_never_claim_an_execution_twice_nor_overfill_a_machine(store: Store) -> None:
    """Two writers per environment (a replica that lost its lease mid-pass and the one that took it)
    and two environments, all claiming at once: every execution starts once, no machine runs more
    than its slots, no GPU index is given twice."""
    project, commit, envs, machines = setup(store, 2, machines=1, gpus=4)
    slots, per_env = 3, 12
    ids = {env.id: [submit(store, project, commit, env.id, gpus=1).id for _ in range(per_env)]  # type: ignore[arg-type]
           for env in envs}

    def claimer(env_id: int, order: int) -> Callable[[], int]:
        def claim() -> int:
            queue = ids[env_id] if order > 0 else ids[env_id][::-1]
            return sum(store.claim_for_machine(eid, machines[env_id][0], slots, "process") is not None  # type: ignore[misc]
                       for eid in queue)
        return claim

    for _ in range(per_env // slots):
        race(*(claimer(env.id, order) for env in envs for order in (1, -1)))  # type: ignore[arg-type]
        running = running_on(store)
        for env in envs:
            machine = machines[env.id][0]  # type: ignore[index]
            on = running.get(machine, [])
            assert len(on) == slots, f"machine {machine} runs {len(on)} executions with {slots} slots"
            given = [i for e in on for i in e.gpu_indices or []]
            assert len(given) == len(set(given)) == slots, f"GPU indices given twice on machine {machine}: {given}"
        for on in running.values():
            for e in on:
                assert store.finish_execution(e.id, e.attempt, "complete", None, 0)  # type: ignore[arg-type]

    with store.read() as s:
        done = list(s.exec(select(Execution)))
        starts = Counter(s.exec(select(ExecutionEvent.execution_id).where(ExecutionEvent.kind == "status",
                                                                          col(ExecutionEvent.text).startswith("started"))))
    assert {e.status for e in done} == {"complete"}
    assert all(e.attempt == 1 for e in done)
    assert set(starts.values()) == {1} and len(starts) == len(done)


def test_a_machine_is_never_retired_while_a_claim_puts_work_on_it(store: Store) -> None:
    project, commit, (env,), _ = setup(store, 1, machines=0)
    for round_ in range(25):
        with store.write() as s:
            machine = Machine(environment_id=env.id, state="ready", instance_id=f"i-{round_}",  # type: ignore[arg-type]
                              idle_since=store.clock() - timedelta(hours=1), created_at=store.clock(),
                              state_changed_at=store.clock())
            s.add(machine)
            s.flush()
            mid: int = machine.id  # type: ignore[assignment]
        eid: int = submit(store, project, commit, env.id).id  # type: ignore[arg-type,assignment]
        claimed, retired = race(lambda: store.claim_for_machine(eid, mid, 1, "process"),
                                lambda: store.retire_if_idle(mid, store.clock(), "idle"))
        assert (claimed is None) != (retired is None), (round_, claimed, retired)
        with store.read() as s:
            state = s.get_one(Machine, mid).state
            status = s.get_one(Execution, eid).status
        assert (state, status) in (("busy", "started"), ("terminating", "queued")), (round_, state, status)
        if claimed is not None:
            store.finish_execution(eid, claimed.attempt, "complete", None, 0)
        else:
            store.request_stop(eid, "not needed")
        store.begin_terminate(mid, "round over")


def test_a_quota_admits_exactly_up_to_its_limit_when_replicas_submit_in_different_environments_at_once(
        store: Store) -> None:
    """One user's quota counts their work in every project and environment. (Each environment gets
    a project of its own here: submissions to one project also take turns on its counter's row.)"""
    project, commit, envs, machines = setup(store, 2)
    other = store.create_project("q", None, None)
    other_commit = store.get_or_create_commit(other.id, "adhoc", "abc", "- step: {name: s, image: x, command: c}")  # type: ignore[arg-type]
    projects = {envs[0].id: (project, commit), envs[1].id: (other.id, other_commit.id)}
    limit, each = 3, 8
    store.set_quota("u", limit)

    def submitter(env_id: int) -> Callable[[], list[int]]:
        return lambda: [submit(store, *projects[env_id], env_id).id for _ in range(each)]  # type: ignore[misc]

    race(*(submitter(env.id) for env in envs))  # type: ignore[arg-type]

    def active() -> int:
        with store.read() as s:
            return s.exec(select(func.count()).select_from(Execution).where(  # type: ignore[no-any-return]
                col(Execution.status).in_(["queued", "started", "stopping"]))).one()

    assert active() == limit

    # Then each replica runs and ends its environment's work while admission (a database-wide
    # write) and more submissions go on: never more than the limit active at once.
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(active())
            stop.wait(0.005)

    def worker(env_id: int) -> Callable[[], int]:
        def run() -> int:
            ended = 0
            for _ in range(each * 4):
                with store.read() as s:
                    queued = list(s.exec(select(Execution.id).where(Execution.environment_id == env_id,
                                                                    Execution.status == "queued")))
                for eid in queued:
                    e = store.claim_for_machine(eid, machines[env_id][0], 3, "process")
                    if e is not None:
                        ended += store.finish_execution(e.id, e.attempt, "complete", None, 0)  # type: ignore[arg-type]
                store.admit_created()
                if ended < 2:
                    submit(store, *projects[env_id], env_id)
            return ended
        return run

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        race(*(worker(env.id) for env in envs), store.admit_created)  # type: ignore[arg-type]
    finally:
        stop.set()
        watcher.join(RACE_S)
    assert seen and max(seen) <= limit, max(seen)
    store.admit_created()
    with store.read() as s:
        statuses = Counter(s.exec(select(Execution.status)))
    assert statuses["queued"] + statuses["started"] == min(limit, statuses["queued"] + statuses["created"]), statuses


def test_executions_of_two_environments_ending_at_once_make_a_dataset_version_once(store: Store) -> None:
    """Aliases and dataset versions belong to a project, whichever environment ran the execution:
    an end with outputs takes the database-wide lock."""
    project, commit, envs, machines = setup(store, 2)
    for round_ in range(8):
        started = []
        for env in envs:
            e = submit(store, project, commit, env.id)  # type: ignore[arg-type]
            claimed = store.claim_for_machine(e.id, machines[env.id][0], 3, "process")  # type: ignore[arg-type,index]
            assert claimed is not None
            started.append(claimed)
        version = f"dataset://d/v{round_}"

        def end(e: Execution) -> Callable[[], bool]:
            out = Output(id=f"{e.id}-model", execution_id=e.id, name="model", size=1, sha256="0" * 64,  # type: ignore[arg-type]
                         uri=f"file:///x/{e.id}/model", properties={"valohai.dataset-versions": [version],
                                                                     "valohai.alias": "best"})
            return lambda: store.finish_execution(e.id, e.attempt, "complete", None, 0, [out])  # type: ignore[arg-type]

        assert race(*(end(e) for e in started)) == [True, True]
        with store.read() as s:
            datasets = list(s.exec(select(Dataset).where(Dataset.name == "d")))
            versions = list(s.exec(select(DatasetVersion.name).where(DatasetVersion.name == f"v{round_}")))
        assert len(datasets) == 1 and versions == [f"v{round_}"]


def test_a_status_change_beside_a_log_chunk_stored_meanwhile_takes_the_next_seq(store: Store) -> None:
    """A log chunk's write takes no lock: one stored between a status change's read of the row and its
    write (a stop asked for while the execution streams) still gets seqs of its own, and the status
    event comes after them, never on one of them."""
    from vh_orch.orchestrator.store.logs import LogBlock, LogChunk

    project, commit, envs, by_env = setup(store, 1)
    execution = submit(store, project, commit, envs[0].id)  # type: ignore[arg-type]
    store.admit_created()
    store.claim_on_machine([execution.id], by_env[envs[0].id][0], 3, "docker")  # type: ignore[arg-type]
    with store.write(environment(envs[0].id)) as s:  # type: ignore[arg-type]
        row = s.get_one(Execution, execution.id)
        read_seq = row.last_seq
        # Stored by another connection while this transaction holds the row as it read it.
        store.append_chunks(execution.id, [LogChunk("stdout", ["a", "b", "c"], "2026-01-01 00:00:00.000000")])  # type: ignore[arg-type]
        store._transition(s, row, "stopping", reason="asked")
    with store.read() as s:
        block = s.exec(select(LogBlock).where(LogBlock.execution_id == execution.id)).one()
        status = s.exec(select(ExecutionEvent).where(ExecutionEvent.execution_id == execution.id,
                                                     ExecutionEvent.text == "stopping: asked")).one()
        last = s.get_one(Execution, execution.id).last_seq
    assert (block.first_seq, block.last_seq) == (read_seq + 1, read_seq + 3)
    assert status.seq == read_seq + 4 == last


def test_an_end_written_without_a_lock_never_overwrites_a_requeue_nor_a_requeue_an_end(store: Store) -> None:
    """An execution's end takes no lock (ROWS): a requeue of its lost machine may commit between the
    end's read of the row and its write. The end then changes nothing (its attempt was requeued), and
    a requeue that read the row before an end committed leaves the final status alone."""
    from vh_orch.orchestrator.models import Execution as E

    project, commit, envs, by_env = setup(store, 1, machines=2)
    first, second = (submit(store, project, commit, envs[0].id) for _ in range(2))  # type: ignore[arg-type]
    store.admit_created()
    machine, other = by_env[envs[0].id]
    store.claim_on_machine([first.id], machine, 3, "docker")  # type: ignore[list-item]
    store.claim_on_machine([second.id], other, 3, "docker")  # type: ignore[list-item]
    table = E.__table__  # type: ignore[attr-defined]
    with store.write(ROWS) as s:  # the end, as it read the row (started, attempt 1)
        row = s.get_one(E, first.id)
        store.mark_lost(machine, "gone", max_attempts=3)  # another connection: requeued, committed
        moved = store._transition(s, row, "complete", also={"exit_code": 0},
                                  only=(table.c.attempt == 1, table.c.status.in_(["started", "stopping"])))
    assert moved is False
    done = store.get_execution(first.id)  # type: ignore[arg-type]
    assert (done.status, done.exit_code, done.machine_id) == ("queued", None, None)
    assert store.finish_execution(first.id, 1, "complete", None, 0) is False  # type: ignore[arg-type]
    with store.write(ROWS) as s:  # a requeue, as it read the row (started)
        stale = s.get_one(E, second.id)
        assert store.finish_execution(second.id, 1, "complete", None, 0) is True  # type: ignore[arg-type]
        assert store._transition(s, stale, "queued", reason="lost", also={"machine_id": None}) is False
    ended = store.get_execution(second.id)  # type: ignore[arg-type]
    assert (ended.status, ended.machine_id) == ("complete", other)
    with store.read() as s:
        texts = list(s.exec(select(ExecutionEvent.text).where(ExecutionEvent.execution_id == second.id)
                            .order_by(col(ExecutionEvent.seq))))
    assert texts[-1] == "complete" and not any(t.startswith("queued: lost") for t in texts)
