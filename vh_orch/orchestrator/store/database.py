"""The database every part of the Store is typed against: engine, transactions, clock and fence.

How the Store is put together: `Store` (store.py) is the one object the rest of vh-orch calls
(`store.create_project(...)`), assembled from one part per concern (core, fleet, leases, tasks,
users, logs, queries, counts, utilization). Every part subclasses `Database`, so a type checker sees the
primitives each of them uses: `read()`, `write()`, `clock`, `engine`, `fence`. Where a part needs
another part's method inside its own transaction, it names that part as a base, so the dependency
is written down and checked, and the parts form a small graph rather than a loop:

    Database
    ├── LeasesStore, UsersStore, LogsStore, QueriesStore, CountsStore, UtilizationStore
    └── WebhooksStore             webhooks; the deliveries an end queues in its own transaction
        └── LifecycleStore        an execution's statuses: insert, admit under quota, transition
            ├── FleetStore        (+ LeasesStore: a claim under a fence holds the execution's lease)
            ├── CoreStore         (+ UsersStore: a project without an owner gets the first admin)
            └── TasksStore, PipelinesStore

Fencing: writes on behalf of owned work go through a fenced store (`store.fenced(fence)`, a
copy of the same type): each of its write transactions first checks that the fence's owner
still holds the lease's key with the same token, and raises LeaseLost otherwise, so nothing of
a replica that was paused past its lease lands. On PostgreSQL the check reads the row FOR
SHARE: a take-over (an UPDATE of that row) waits for the fenced write to commit, and the
write waits for a take-over in progress.

Locks (PostgreSQL; on SQLite BEGIN IMMEDIATE serialises every write anyway): every write
transaction says what it serialises on (`write(lock=...)`). Read-then-write steps whose rule
spans environments (admission under quotas and budgets, tasks, pipelines, users, projects,
leases, webhooks, environments themselves) take the database-wide advisory key ALL exclusively.
Steps confined to one environment's machines and the executions they run (claiming a queued
execution for a machine, a machine's states) take that key shared and the environment's own key
exclusively (`environment()`, `machine_environment()`): two replicas that own different
environments write at once, two writers of one environment still take turns, and an ALL writer
waits for both (and they for it), so whatever ALL protected before still holds. Always ALL's key
first, then the environment's: one order, no deadlock among them. Writes that change only their own
rows in one statement (log lines, heartbeats, lease renewals, counters) take none (ROWS), and so
does an execution's end without outputs: its status moves only where the row still is what it read
(LifecycleStore._transitions), so a requeue or stop that came first wins.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine, FromClause, TextClause, inspect, text
from sqlmodel import Session, SQLModel

from vh_orch.errors import LeaseLost
from vh_orch.orchestrator.db import busy_timeout_s, get_engine, write_guard_sql, writer_lock
from vh_orch.timeutil import utcnow

KEPT_MOST = 512  # entries Database.kept holds before it starts over
_NONE = object()
T = TypeVar("T")
WRITE_LOCK_KEY = 0x76686F7263  # "vhorc": the database-wide advisory lock (one bigint key) on PostgreSQL
# With an environment's id, the two-int key of its writers' lock ("vhoe"); PostgreSQL keeps the
# two-int keys apart from the bigint ones.
ENV_LOCK_CLASS = 0x76686F65


@dataclass(frozen=True, slots=True)
class Lock:
    """What a write transaction serialises on, on PostgreSQL: the statements that take its advisory
    locks, in order (ALL's key always first), with their parameters."""

    statements: tuple[TextClause, ...]
    params: tuple[tuple[str, int], ...] = ()
    name: str = ""

    def __repr__(self) -> str:
        return f"Lock({self.name})"


ALL = Lock((text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"),), name="all")
ROWS = Lock((), name="rows")  # none: its statements lock the rows they change

_ALL_SHARED = text(f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK_KEY})")
_ENVIRONMENT = text(f"SELECT pg_advisory_xact_lock({ENV_LOCK_CLASS}, CAST(:env AS integer))")
_MACHINE_ENVIRONMENT = text(f"SELECT pg_advisory_xact_lock({ENV_LOCK_CLASS}, "
                            "(SELECT environment_id FROM machine WHERE id = :machine))")


def environment(environment_id: int) -> Lock:
    """A write confined to one environment: its machines and the executions they run."""
    return Lock((_ALL_SHARED, _ENVIRONMENT), (("env", environment_id),), f"environment {environment_id}")


def machine_environment(machine_id: int) -> Lock:
    """environment() of the machine's environment (a row's environment_id never changes)."""
    return Lock((_ALL_SHARED, _MACHINE_ENVIRONMENT), (("machine", machine_id),),
                f"machine {machine_id}'s environment")


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease a replica holds (see leases.py): its writes land only while it still does.
    fresh_until: until when (time.monotonic()) a lone check may trust it without a read: a lease
    that this replica took, counted from before the write that took it, for a small part of its
    length (no other replica takes a lease before it expires or its owner is gone)."""

    key: str
    owner: int
    token: int
    fresh_until: float = field(default=0.0, compare=False)


def table_of(model: type[SQLModel]) -> FromClause:
    """A model's Core table, for reads and updates that skip the ORM (plain rows, JSON paths).
    It is the model's `__table__`, which SQLModel does not declare to a type checker."""
    return inspect(model).local_table


class Database:
    """Readers use `read()`, which never blocks a writer in WAL mode; writers use `write()` (on
    SQLite: BEGIN IMMEDIATE, so read-then-write steps never interleave). Objects returned stay
    usable after their session closes (expire_on_commit=False)."""

    fence: Fence | None = None  # set on the copies fenced() makes

    def __init__(self, url: str, clock: Callable[[], datetime] = utcnow) -> None:
        self.url = url
        self.engine: Engine = get_engine(url)
        self._write_guard = write_guard_sql(url)
        self._one_writer = writer_lock(url)
        self._writer_wait_s = busy_timeout_s(url) if self._one_writer is not None else 0.0
        # Every time the store writes comes from here, so tests can run on a virtual clock.
        self.clock = clock
        # What never changes once written (a commit, a task's stop condition), as first read: see kept().
        # Shared with the fenced copies of this store.
        self._kept: dict[tuple[str, int], Any] = {}
        # The read that this thread's reads share, inside one_read() (shared with the fenced copies).
        self._shared_read = threading.local()

    def kept(self, kind: str, key: int, read: Callable[[], T]) -> T:
        """`read()`, the first time this store is asked for (kind, key); what it gave, after. Only for
        what never changes once written (every runner reads its commit). At KEPT_MOST, it starts over."""
        found = self._kept.get((kind, key), _NONE)
        if found is _NONE:
            found = read()
            if len(self._kept) >= KEPT_MOST:
                self._kept.clear()
            self._kept[(kind, key)] = found
        return found  # type: ignore[no-any-return]

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around a write transaction on SQLite: this process's writers one at a time (db.writer_lock).
        One that waits longer than the busy timeout goes on to SQLite's own wait (and its error)."""
        lock = self._one_writer
        if lock is None:
            yield
            return
        got = lock.acquire(timeout=self._writer_wait_s)
        try:
            yield
        finally:
            if got:
                lock.release()

    @contextmanager
    def write(self, lock: Lock = ALL) -> Iterator[Session]:
        """A write transaction. On PostgreSQL it first takes `lock`'s transaction-level advisory
        locks, the counterpart of SQLite's BEGIN IMMEDIATE: read-then-write steps of several
        replicas that share a rule never interleave (see Locks above). A fenced store checks its
        lease next."""
        with self.writing(), self.engine.connect() as conn, conn.begin():
            if self._write_guard is not None:
                conn.exec_driver_sql(self._write_guard)
            if lock.statements and conn.dialect.name == "postgresql":
                for statement in lock.statements:
                    conn.execute(statement, dict(lock.params))
            if self.fence is not None:
                self.check_fence(conn)
            with Session(bind=conn, expire_on_commit=False) as session:
                yield session
                session.flush()

    @contextmanager
    def read(self) -> Iterator[Session]:
        shared = getattr(self._shared_read, "session", None)
        if shared is not None:  # inside one_read(): its transaction
            yield shared
            return
        with self.engine.connect().execution_options(vh_readonly=True) as conn, conn.begin():
            with Session(bind=conn, expire_on_commit=False) as session:
                yield session

    @contextmanager
    def one_read(self) -> Iterator[None]:
        """This thread's reads inside share one read transaction: one BEGIN for a pass's several
        questions, and (on SQLite) one view of the database. Writes go on in their own transactions,
        and a read inside does not see what they wrote: read what a write settles after the block."""
        if getattr(self._shared_read, "session", None) is not None:
            yield
            return
        with self.read() as session:
            self._shared_read.session = session
            try:
                yield
            finally:
                self._shared_read.session = None

    def fenced(self, fence: Fence | None) -> Self:
        """This store, with every write checked against `fence` (None: unchecked)."""
        other = copy.copy(self)
        other.fence = fence
        return other

    def check_fence(self, conn: Connection | None = None) -> None:
        """Raise LeaseLost unless this store's fence still holds (a no-op without a fence). Inside a
        write (`conn`), the lease row is read FOR SHARE on PostgreSQL: a take-over waits for that write.
        Alone (before an action outside the database: a launch, a terminate, a runner's poll) it is a
        read, which waits for no writer, or nothing while the fence is fresh (Fence.fresh_until)."""
        fence = self.fence
        if fence is None:
            return
        if conn is None:
            if time.monotonic() < fence.fresh_until:
                return
            with self.read() as s:
                self._check_lease(s.connection(), fence, lock="")
            return
        self._check_lease(conn, fence, lock=" FOR SHARE" if conn.dialect.name == "postgresql" else "")

    @staticmethod
    def _check_lease(conn: Connection, fence: Fence, lock: str) -> None:
        row = conn.execute(text(f"SELECT owner, token FROM lease WHERE key = :key{lock}"),
                           {"key": fence.key}).first()
        if row is None or row.owner != fence.owner or row.token != fence.token:
            raise LeaseLost(f"{fence.key}: this replica no longer holds its lease (another replica took it over)")
