"""Engines and schema upgrades.

SQLite runs in WAL mode with a busy timeout so the daemon and CLI commands can work
at the same time; any other SQLAlchemy URL (PostgreSQL) is used as it is.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cache
from pathlib import Path

from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect

from vh_orch.errors import ConfigError
from vh_orch.settings import lease_seconds

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections kept open per process (and how many more may open at once, closed when given back):
# a daemon's runner threads each read and write, and a connection opened per transaction costs more
# than the transaction. PostgreSQL's are server processes, shared by every replica and the API
# (its max_connections is 100 by default): fewer.
SQLITE_POOL = (32, 64)
POSTGRES_POOL = (16, 16)


@cache
def writer_lock(url: str) -> threading.RLock | None:
    """SQLite: the lock this process's writers take before BEGIN IMMEDIATE (None for other databases).

    SQLite's own wait for a busy database sleeps in growing steps (1, 2, 5, 10... 100 ms) whoever
    holds it: with a dozen runner threads writing small transactions, each write waited tens of
    milliseconds for a lock held for one. Inside one process the threads queue on this lock instead
    and the next one goes the moment the last commits; SQLite's wait is left for other processes."""
    return threading.RLock() if url.startswith("sqlite") else None


def busy_timeout_s(url: str) -> float:
    return _busy_timeout_ms(url) / 1000


@cache
def get_engine(url: str) -> Engine:
    """One engine per URL per process.

    SQLite waits SQLITE_BUSY_TIMEOUT_MS for a lock held elsewhere, or what the URL's
    `timeout` says in seconds (`sqlite:////var/lib/vh-orch/state.db?timeout=60`)."""
    if url.startswith("sqlite"):
        busy_ms = _busy_timeout_ms(url)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
            # Every runner thread reads and writes: connections past the pool would be opened (pragmas,
            # the schema read again) and closed for each transaction. SQLite's cost little to keep.
            pool_size=SQLITE_POOL[0],
            max_overflow=SQLITE_POOL[1],
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Let SQLAlchemy drive transactions itself (pysqlite's own BEGIN handling
            # would defer locking until the first write).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # Writers take the write lock up front: read-then-write transactions
            # (claiming a queued execution, bumping a counter) must not interleave,
            # and a deferred transaction that upgrades later fails instead of waiting.
            # Readers (execution option vh_readonly) never block anyone in WAL mode.
            readonly = conn.get_execution_options().get("vh_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=POSTGRES_POOL[0],
                             max_overflow=POSTGRES_POOL[1])
    except Exception as exc:  # bad URL, missing driver
        raise ConfigError(f"cannot use database URL from VH_ORCH_DB: {exc}") from exc


def write_guard_sql(url: str) -> str | None:
    """What a write transaction runs first on PostgreSQL (None elsewhere). A replica paused
    inside a write (a GC pause, SIGSTOP, a cut network) would hold its locks, the writers' advisory
    locks among them (store/database.py), and stall other replicas: the server ends such a transaction
    after a third of the lease, so the others go on and take its work over when the lease expires.
    Reads hold no lock, so they are never cut: a CLI paging a long log may take its time."""
    if not url.startswith("postgresql"):
        return None
    idle_ms = int(lease_seconds(os.environ.get("VH_ORCH_LEASE_S")) * 1000 / 3)
    return f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms}"


def _busy_timeout_ms(url: str) -> int:
    from sqlalchemy.engine import make_url

    raw = make_url(url).query.get("timeout")
    if raw is None:
        return SQLITE_BUSY_TIMEOUT_MS
    try:
        seconds = float(raw if isinstance(raw, str) else raw[-1])
    except ValueError:
        raise ConfigError(f"VH_ORCH_DB: timeout={raw!r} is not a number of seconds") from None
    if seconds < 0:
        raise ConfigError("VH_ORCH_DB: timeout must not be negative")
    return int(seconds * 1000)


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # only `init` and the tests need Alembic: keep the CLI quick

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration; never drops data, safe to repeat."""
    from alembic import command

    engine = get_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def is_initialised(url: str) -> bool:
    engine = get_engine(url)
    return inspect(engine).has_table("alembic_version")


def head_revision() -> str:
    """The newest migration this vh-orch has (revisions are numbered: 0001, 0002, ...)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py"))


def schema_revision(url: str) -> str | None:
    with get_engine(url).connect() as conn:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
