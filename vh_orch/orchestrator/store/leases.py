"""Leases: which replica owns which unit of work.

A lease is a row (key, owner, token, expires_at). A replica takes a lease that is free, expired,
or held by a replica that stopped (or whose process is gone, on its own host); its heartbeat
renews all of its leases in one statement. Taking a lease from someone else bumps the token.

Writes on behalf of owned work go through a fenced store (`store.fenced(fence)`), whose every
write transaction first checks that its Fence still holds: see database.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, update
from sqlmodel import Session, col, select

from vh_orch.orchestrator.models import DaemonHeartbeat, Execution, Lease
from vh_orch.orchestrator.store.database import ROWS, Database
from vh_orch.timeutil import as_utc
from vh_orch.values import ExecutionStatus

DEFAULT_LEASE_S = 15.0
CLUSTER = "cluster"  # the installation-wide jobs: admission, tasks, draining, cleanup


def env_key(environment_id: int) -> str:
    return f"env:{environment_id}"


def exec_key(execution_id: int) -> str:
    return f"exec:{execution_id}"


@dataclass(frozen=True, slots=True)
class Replica:
    id: int
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    owns: tuple[str, ...]


class LeasesStore(Database):
    # -- taking, renewing, releasing ----------------------------------------------------------

    def take_leases(self, owner: int, keys: Iterable[str], lease_s: float = DEFAULT_LEASE_S,
                    limit: int | None = None) -> dict[str, int]:
        """The leases among `keys` that `owner` holds after this call, with their tokens: those it
        held already (renewed), then free, expired or dead-owned ones, up to `limit` held in all."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self.read() as s:  # every pass asks, and most find nothing to take: no lock for those
            unchanged = self._nothing_to_take(s, owner, wanted, lease_s, limit)
            if unchanged is not None:
                return unchanged
        with self.write() as s:
            now = self.clock()
            expires = now + timedelta(seconds=lease_s)
            query = select(Lease).where(col(Lease.key).in_(wanted))
            if s.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
                query = query.with_for_update(skip_locked=True)
            rows = {row.key: row for row in s.exec(query)}
            dead = self._dead_owners(s)
            held: dict[str, int] = {}
            for key in wanted:
                row = rows.get(key)
                if row is not None and row.owner == owner:
                    row.expires_at = expires
                    held[key] = row.token
            for key in wanted:
                if key in held or (limit is not None and len(held) >= limit):
                    continue
                row = rows.get(key)
                free = not self._locked_elsewhere(s, key) if row is None \
                    else as_utc(row.expires_at) <= now or row.owner in dead
                if free:
                    held[key] = self.hold_lease(s, key, owner, lease_s)
            return held

    def _nothing_to_take(self, s: Session, owner: int, wanted: list[str], lease_s: float,
                         limit: int | None) -> dict[str, int] | None:
        """What `owner` holds among `wanted`, if a take would change nothing but the expiry of
        leases with more than half of their time left (the heartbeat renews those); else None."""
        now = self.clock()
        rows = {row.key: row for row in s.exec(select(Lease).where(col(Lease.key).in_(wanted)))}
        mine = {key: row for key, row in rows.items() if row.owner == owner}
        if any(as_utc(row.expires_at) <= now + timedelta(seconds=lease_s / 2) for row in mine.values()):
            return None
        if limit is None or len(mine) < limit:
            dead = self._dead_owners(s)
            if any(key not in rows or as_utc(rows[key].expires_at) <= now or rows[key].owner in dead
                   for key in wanted if key not in mine):
                return None
        return {key: mine[key].token for key in wanted if key in mine}

    def _locked_elsewhere(self, s: Session, key: str) -> bool:
        """Whether a row for `key` exists that SKIP LOCKED hid (another replica is taking it)."""
        return s.exec(select(Lease.key).where(Lease.key == key)).first() is not None

    def _dead_owners(self, s: Session) -> set[int]:
        """Replicas whose leases may be taken before they expire: stopped ones."""
        return set(s.exec(select(DaemonHeartbeat.id).where(col(DaemonHeartbeat.stopped_at).is_not(None))))  # type: ignore[arg-type]

    def renew_leases(self, owner: int, lease_s: float = DEFAULT_LEASE_S) -> set[str]:
        """Extend every lease `owner` holds; returns their keys (what it still owns)."""
        with self.write(ROWS) as s:
            now = self.clock()
            s.execute(update(Lease).where(col(Lease.owner) == owner)
                      .values(expires_at=now + timedelta(seconds=lease_s)))
            return set(s.exec(select(Lease.key).where(Lease.owner == owner)))

    def release_leases(self, owner: int, keys: Iterable[str] | None = None) -> None:
        """Give leases up at once (nobody's, expired now), all of them or `keys`: another replica
        takes them in its next pass instead of waiting for them to expire."""
        with self.write(ROWS) as s:
            query = update(Lease).where(col(Lease.owner) == owner)
            if keys is not None:
                query = query.where(col(Lease.key).in_(list(keys)))
            s.execute(query.values(owner=0, expires_at=self.clock()))

    def hold_lease(self, s: Session, key: str, owner: int, lease_s: float = DEFAULT_LEASE_S) -> int:
        """Inside a write: `owner` holds `key` from now on, with a new token (a new attempt, a take-over)."""
        return self.hold_leases(s, [key], owner, lease_s)[key]

    def hold_leases(self, s: Session, keys: Sequence[str], owner: int,
                    lease_s: float = DEFAULT_LEASE_S) -> dict[str, int]:
        """hold_lease of several keys (a claim's batch) in one read and one flush: each key's new token."""
        if not keys:
            return {}
        rows = {row.key: row for row in s.exec(select(Lease).where(col(Lease.key).in_(list(keys))))}
        expires = self.clock() + timedelta(seconds=lease_s)
        for key in keys:
            row = rows.get(key)
            if row is None:
                row = rows[key] = Lease(key=key, owner=owner, token=1, expires_at=expires)
            else:
                row.owner, row.token, row.expires_at = owner, row.token + 1, expires
            s.add(row)
        s.flush()
        return {key: rows[key].token for key in keys}

    def take_over(self, execution_id: int, owner: int, lease_s: float = DEFAULT_LEASE_S) -> int | None:
        """Take an execution whose owner is gone (see unowned_executions); its new token, or None
        if it is no longer started or someone live holds it now."""
        with self.write() as s:
            now = self.clock()
            execution = s.get(Execution, execution_id)
            if execution is None or execution.status not in (ExecutionStatus.STARTED, ExecutionStatus.STOPPING):
                return None
            row = s.get(Lease, exec_key(execution_id))
            if row is not None and row.owner != owner and as_utc(row.expires_at) > now \
                    and row.owner not in self._dead_owners(s):
                return None
            return self.hold_lease(s, exec_key(execution_id), owner, lease_s)

    def lease_token(self, key: str, owner: int) -> int | None:
        with self.read() as s:
            row = s.get(Lease, key)
        return row.token if row is not None and row.owner == owner else None

    # -- what needs an owner --------------------------------------------------------------

    def unowned_executions(self) -> list[Execution]:
        """Started (or stopping) executions that no live replica holds: no lease, an expired one,
        or one whose owner stopped."""
        with self.read() as s:
            now = self.clock()
            dead = self._dead_owners(s)
            live_lease = and_(Lease.expires_at > now, col(Lease.owner).not_in(dead) if dead else True)
            held = select(Lease.key).where(live_lease)
            held_ids = {int(k.split(":", 1)[1]) for k in s.exec(held) if k.startswith("exec:")}
            rows = s.exec(select(Execution).where(
                col(Execution.status).in_([ExecutionStatus.STARTED, ExecutionStatus.STOPPING])
            ).order_by(Execution.id))
            return [e for e in rows if e.id not in held_ids]

    def executions_held_by_others(self, owner: int) -> set[int]:
        """Executions another replica holds a live lease on (their containers are not leftovers)."""
        with self.read() as s:
            keys = s.exec(select(Lease.key).where(Lease.owner != owner, Lease.expires_at > self.clock(),
                                                  col(Lease.key).startswith("exec:")))
            return {int(k.split(":", 1)[1]) for k in keys}

    def mark_dead_replicas(self, hostname: str, alive: Any) -> list[int]:
        """Replicas on this host whose process is gone (`alive(pid)` false): marked stopped, so
        their leases are free now rather than when they expire."""
        with self.read() as s:  # every pass: a write only when one is gone
            rows = s.exec(select(DaemonHeartbeat.id, DaemonHeartbeat.pid).where(
                col(DaemonHeartbeat.stopped_at).is_(None), DaemonHeartbeat.hostname == hostname))
            gone = [row_id for row_id, pid in rows if not alive(pid)]
        if gone:
            with self.write(ROWS) as s:
                s.execute(update(DaemonHeartbeat).where(col(DaemonHeartbeat.id).in_(gone),
                                                        col(DaemonHeartbeat.stopped_at).is_(None))
                          .values(stopped_at=self.clock()))
        return gone

    def replicas(self, stale_after: timedelta) -> list[Replica]:
        """The replicas with a fresh heartbeat, and what each owns (lease keys, live ones)."""
        with self.read() as s:
            now = self.clock()
            beats = list(s.exec(select(DaemonHeartbeat).where(
                col(DaemonHeartbeat.stopped_at).is_(None), DaemonHeartbeat.heartbeat_at > now - stale_after
            ).order_by(DaemonHeartbeat.id)))
            owns: dict[int, list[str]] = {}
            for lease in s.exec(select(Lease).where(Lease.expires_at > now).order_by(Lease.key)):
                owns.setdefault(lease.owner, []).append(lease.key)
        return [Replica(b.id, b.hostname, b.pid, b.started_at, b.heartbeat_at, tuple(owns.get(b.id, ())))  # type: ignore[arg-type]
                for b in beats]
