"""Time of one reconcile pass with 1,000 busy machines and 100 / 10,000 / 100,000 queued executions.

SQLite, the fake cloud listing 1,000 instances. Beside it, the reference a naive
scheduler would pay: reading every queued execution once. Goal: <= 50 ms per pass
at every size, so the pass must not grow with the queue.

    .venv/bin/python bench/reconcile_pass.py [--machines 1000] [--passes 15]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from typing import Any

from _common import fresh_home, percentile, print_table
from sqlalchemy import Connection, insert

from vh_orch.cloud_drivers.base import LaunchSpec
from vh_orch.cloud_drivers.fake import FakeCloud, FakeDriver
from vh_orch.config.environments import parse_entry
from vh_orch.orchestrator.drivers import Drivers
from vh_orch.orchestrator.models import Execution, Machine
from vh_orch.orchestrator.reconcile import Reconciler
from vh_orch.orchestrator.store import Store
from vh_orch.timeutil import utcnow


class NoHost:
    def run_execution(self, execution, env, machine, fence=None) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("every machine is busy: nothing should be dispatched")

    def abandon(self, execution_ids, reason) -> None:  # type: ignore[no-untyped-def]
        pass


def build(machines: int, queued: int, db_url: str | None = None) -> tuple[Store, Reconciler]:
    """A fresh home (SQLite, or the empty database `db_url`) with one fake environment `big`: `machines`
    busy machines, each running one execution, the cloud listing as many instances, `queued` waiting."""
    settings, store = fresh_home(f"reconcile-{queued}", db_url)
    spec = parse_entry({"name": "big", "cloud": "fake", "max_scale": machines, "idle_timeout": "1h"}, "bench")
    store.save_environment(spec.name, spec.cloud, spec.columns, spec.settings)
    env = store.get_environment("big")
    project = store.get_project("bench")
    commit = store.get_or_create_commit(project.id, "adhoc", "x", "- step: {name: s, image: i, command: c}")  # type: ignore[arg-type]
    cloud = FakeCloud()
    cluster = store.cluster_id()
    now = utcnow()
    machine_rows, started_rows, queued_rows = [], [], []
    for i in range(machines):
        inst = cloud.run_instance(LaunchSpec(machine_id=i + 1, launch_token=str(i), cluster_id=cluster,
                                             environment="big", zone=None, instance_type=None), boot_seconds=0)
        machine_rows.append(dict(id=i + 1, environment_id=env.id, state="busy", instance_id=inst.instance_id,
                                 launch_token=str(i), created_at=now, updated_at=now, state_changed_at=now,
                                 terminate_attempts=0))
    base = dict(project_id=project.id, commit_id=commit.id, step="s", command="c", parameters={}, inputs={},
                environment_variables={}, environment_id=env.id, priority=0, user="bench", attempt=1,
                created_at=now, metadata_latest={}, last_seq=0)
    for i in range(machines):
        started_rows.append(dict(base, counter=i + 1, status="started", machine_id=i + 1, queued_at=now,
                                 started_at=now))
    for i in range(queued):
        queued_rows.append(dict(base, counter=machines + i + 1, status="queued", queued_at=now, attempt=0))
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # COPY: psycopg's executemany sends one statement a row (minutes for 110,000 rows).
            _copy(conn, "machine", machine_rows)
            _copy(conn, "execution", started_rows)
            _copy(conn, "execution", queued_rows)
            # ids given explicitly leave the sequence behind
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('machine', 'id'), max(id)) FROM machine")
        else:
            conn.execute(insert(Machine), machine_rows)
            conn.execute(insert(Execution), started_rows)
            for start in range(0, len(queued_rows), 20_000):
                conn.execute(insert(Execution), queued_rows[start:start + 20_000])
    reconciler = Reconciler(store, NoHost(), drivers=Drivers(cluster, {env.id: FakeDriver(cloud, cluster, "big", 0)}))  # type: ignore[dict-item]
    return store, reconciler


def _copy(conn: Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL's COPY of `rows` (all with the same keys) into `table`."""
    if not rows:
        return
    columns = list(rows[0])
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    quoted = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([json.dumps(v) if isinstance(v, dict) else v for v in (row[c] for c in columns)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=30)
    parser.add_argument("--sizes", default="100,10000,100000")
    args = parser.parse_args()
    rows = []
    for queued in (int(s) for s in args.sizes.split(",")):
        store, reconciler = build(args.machines, queued)
        # Warm caches, and collect the set-up's garbage so that it is not billed to a pass.
        reconciler.run_pass()
        gc.collect()
        times = []
        for _ in range(args.passes):
            start = time.perf_counter()
            actions = reconciler.run_pass()
            times.append(time.perf_counter() - start)
        assert not actions, actions[:3]
        start = time.perf_counter()
        naive = len(store.executions_in(["queued"]))
        naive_s = time.perf_counter() - start
        assert naive == queued
        rows.append([f"{args.machines:,}", f"{queued:,}", f"{statistics.median(times) * 1000:.1f}",
                     f"{percentile(times, 95) * 1000:.1f}", f"{max(times) * 1000:.1f}", f"{naive_s * 1000:.1f}"])
    print_table("one reconcile pass (SQLite)", ["machines", "queued", "pass p50 ms", "p95 ms", "max ms",
                                                 "reference: read the queue once, ms"], rows)


if __name__ == "__main__":
    main()
