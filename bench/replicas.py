"""Several `vh-orch serve` replicas on one PostgreSQL, each table beside a reference of the same run.

1. One reconcile pass with 10,000 busy machines (the fake cloud listing as many) and 100,000
   queued executions, on PostgreSQL beside SQLite; the pass of a daemon that owns everything, and
   the pass of a replica (`run_pass(owned=...)`, every write fenced by the environment's lease),
   with the statements each pass sends. Reference: reading the queue once.
2. Executions dispatched per second by 1, 2 and 3 replicas on PostgreSQL, beside one daemon on
   SQLite: 300 queued executions of `true` over 6 fake environments (process runtime, one shared
   cloud state file; 6 so that 1, 2 and 3 replicas each get an equal share), counted from the
   stored rows once every execution is final. With where the CPU went meanwhile (from /proc): the
   replicas (with the commands they ran), PostgreSQL's processes, and the whole machine, whose
   other users (another test suite, other agents) the load average shows.
3. Take-over: 2 replicas on PostgreSQL, replica A runs 4 `sleep 60` executions; A is SIGKILLed
   (its process is gone: noticed at the next pass; but only once its parent has reaped it, a
   zombie's pid still answers) or SIGSTOPped (its leases must expire first). Timed from the
   signal to the moment another replica holds every one of those executions' leases (the lease
   table, polled every 50 ms), and to all of them running again. Reference: one daemon on
   SQLite, killed and restarted at once (as a supervisor would).

Last, the statements PostgreSQL logged as slower than --slow-ms (waits for a lock included).
A PostgreSQL of its own on a loopback port (tests/pgserver.py); the fake cloud runs commands
as processes on this host; no network, no Docker.

    .venv/bin/python bench/replicas.py [--quick] [--machines 10000] [--queued 100000] [--executions 300]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
from _common import percentile, print_table
from _world import FINAL, fake_envs, wait_for, world
from reconcile_pass import build
from sqlalchemy import event

from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.database import WRITE_LOCK_KEY, Fence
from vh_orch.orchestrator.store.leases import env_key, exec_key

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pgserver  # noqa: E402

WRITE_RE = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.I)


def ms(values: list[float]) -> list[str]:
    return [f"{percentile(values, 50) * 1000:.1f}", f"{percentile(values, 95) * 1000:.1f}",
            f"{max(values) * 1000:.1f}"]


# -- 1. one reconcile pass --------------------------------------------------------------------


ALL_LOCK = f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"
ENV_LOCK = f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK_KEY})"  # an environment's writer: then its own key
LOCKS = "SELECT pg_advisory_xact_lock"  # how every statement that takes a write lock begins


class Statements:
    """What a pass sends: statements (SQLite's BEGIN aside: PostgreSQL's is implicit), the time
    spent in them (the server's work and the transfer, not decoding rows), the write transactions
    that take a write lock (SQLite's BEGIN IMMEDIATE; on PostgreSQL the database-wide advisory
    lock or an environment's), the rows written (INSERT/UPDATE/DELETE) and the lease checks of
    fenced writes."""

    def __init__(self, store: Store) -> None:
        self.count = self.locks = self.writes = self.fence_checks = 0
        self.seconds = 0.0
        event.listen(store.engine, "before_cursor_execute", self._before)
        event.listen(store.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, params, context, many) -> None:  # type: ignore[no-untyped-def]
        conn.info["bench_t0"] = time.perf_counter()

    def _after(self, conn, cursor, statement, params, context, many) -> None:  # type: ignore[no-untyped-def]
        self.seconds += time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())
        self.locks += statement in ("BEGIN IMMEDIATE", ALL_LOCK, ENV_LOCK)
        if statement.startswith("BEGIN"):
            return
        self.count += 1
        self.writes += bool(WRITE_RE.match(statement))
        self.fence_checks += statement.startswith("SELECT owner, token FROM lease")

    def reset(self) -> tuple[int, int, int, int, float]:
        out = (self.count, self.locks, self.writes, self.fence_checks, self.seconds)
        self.count = self.locks = self.writes = self.fence_checks = 0
        self.seconds = 0.0
        return out


def reconcile_pass(pg: pgserver.PostgresServer, machines: int, queued: int, passes: int) -> None:
    rows = []
    # Which psycopg implementation decodes rows (python, c or binary) weighs on every read.
    for name, url in (("SQLite", None), (f"PostgreSQL (psycopg {psycopg.pq.__impl__})", pg.new_database())):
        started = time.perf_counter()
        store, reconciler = build(machines, queued, url)
        built_s = time.perf_counter() - started
        env = store.get_environment("big")
        replica = store.register_daemon(timedelta(seconds=10)).id
        assert replica is not None
        key = env_key(env.id)  # type: ignore[arg-type]
        fence = Fence(key, replica, store.take_leases(replica, [key])[key])
        statements = Statements(store)

        def timed(run: Callable[[], object]) -> tuple[list[float], list[tuple[int, int, int, int, float]]]:
            run()  # warm caches, and collect the set-up's garbage so that it is not billed to a pass
            gc.collect()
            statements.reset()
            times, sent = [], []
            for _ in range(passes):
                start = time.perf_counter()
                result = run()
                times.append(time.perf_counter() - start)
                sent.append(statements.reset())
                assert not result, result  # a steady pass: every machine busy, nothing to decide
            return times, sent

        for label, run in (("daemon: run_pass()", reconciler.run_pass),
                           ("replica: run_pass(owned={env: fence})",
                            lambda: reconciler.run_pass({env.id: fence})),  # type: ignore[dict-item]
                           ("replica: take_leases (renew its env lease)",
                            lambda: not store.take_leases(replica, [key]))):
            times, sent = timed(run)
            count, locks, writes, checks, in_sql = (statistics.median(x[i] for x in sent) for i in range(5))
            rows.append([name, label, *ms(times), f"{in_sql * 1000:.1f}", f"{count:.0f}", f"{locks:.0f}",
                         f"{writes:.0f}", f"{checks:.0f}"])
        start = time.perf_counter()
        naive = len(store.executions_in(["queued"]))
        naive_s = time.perf_counter() - start
        assert naive == queued
        rows.append([name, "reference: read the queue once", f"{naive_s * 1000:.1f}", *[""] * 7])
        rows.append([name, f"(set-up: {built_s:.0f} s to insert the rows)", *[""] * 8])
        store.engine.dispose()
    print_table(f"1. one reconcile pass, {machines:,} busy machines, {queued:,} queued, {passes} passes "
                "(medians per pass: in SQL = inside statements, not decoding rows; write txns = ones taking "
                "the write lock; writes = INSERT/UPDATE/DELETE; fence checks = lease reads of fenced writes)",
                ["database", "pass", "p50 ms", "p95 ms", "max ms", "in SQL ms", "statements", "write txns",
                 "writes", "fence checks"], rows)


# -- 2. dispatch throughput -------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, children: bool = True) -> float:
    """CPU seconds a process used (with its children that it waited for: the commands it ran)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15 if children else 13]) / TICK


def postgres_cpu(pg: pgserver.PostgresServer) -> dict[int, float]:
    """CPU seconds of the server's processes (the postmaster and its children: backends, writers)."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    found = {postmaster: cpu_s(postmaster, children=False)}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                found[int(proc.name)] = cpu_s(int(proc.name), children=False)
        except (OSError, IndexError, ValueError):
            pass
    return found


def machine_cpu_s() -> tuple[float, float]:
    """The whole machine's busy and total CPU seconds since boot (all cores)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK, sum(values) / TICK


def throughput(pg: pgserver.PostgresServer, executions: int, envs: int, counts: list[int], timeout: float,
               slow_ms: float) -> None:
    server_log = pg.folder / "server.log"
    rows = []
    for label, db_url, count in [("SQLite, 1 daemon (reference)", None, 1),
                                 *((f"PostgreSQL, {n} replica(s)", "pg", n) for n in counts)]:
        with world(f"dispatch-{count}", pg.new_database() if db_url else None, fake_envs(envs, 2, 4)) as w:
            w.start(count)
            def shared_out() -> list[int] | None:
                shares = w.shares()
                fair = len(shares) == count and sum(shares) == envs and max(shares) == -(-envs // count)
                return shares if fair else None

            shares = wait_for("the environments to be shared out", shared_out, 60, 0.25)
            log_offset = server_log.stat().st_size
            pids = [r.process.pid for r in w.replicas]
            replicas_before, pg_before, machine_before = [cpu_s(p) for p in pids], postgres_cpu(pg), machine_cpu_s()
            ids = w.queue("noop", executions)
            started = time.perf_counter()
            wait_for("every execution to end",
                     lambda: all(e.status in FINAL for e in w.executions(ids)), timeout, 0.5)
            wall_s = time.perf_counter() - started
            replicas_s = sum(cpu_s(p) for p in pids) - sum(replicas_before)
            pg_after, (busy, total) = postgres_cpu(pg), machine_cpu_s()
            pg_s = sum(v - pg_before.get(p, 0.0) for p, v in pg_after.items())
            busy_share = (busy - machine_before[0]) / (total - machine_before[1])
            done = w.executions(ids)
        waits = [t for statement, times in slow_statements(
            server_log.read_bytes()[log_offset:].decode(errors="replace")).items()
            if statement.startswith(LOCKS) for t in times]
        queued_at = min(e.queued_at for e in done)  # type: ignore[type-var]
        starts = sorted(e.started_at for e in done if e.started_at)  # type: ignore[type-var]
        ends = [e.ended_at for e in done if e.ended_at]
        complete = sum(e.status == "complete" for e in done)
        span = (starts[-1] - starts[0]).total_seconds()
        rows.append([label, "/".join(map(str, sorted(shares, reverse=True))), f"{complete}/{len(done)}",
                     f"{(starts[0] - queued_at).total_seconds():.2f}", f"{(starts[-1] - queued_at).total_seconds():.1f}",
                     f"{(len(starts) - 1) / span:.1f}" if span else "-",
                     f"{len(starts) / (starts[-1] - queued_at).total_seconds():.1f}",
                     f"{(max(ends) - queued_at).total_seconds():.1f}", f"{wall_s:.1f}",
                     f"{len(waits)} / {sum(waits) / 1000:.1f} s" if db_url else "-",
                     f"{replicas_s * 1000 / len(done):.0f}", f"{pg_s * 1000 / len(done):.0f}" if db_url else "-",
                     f"{(replicas_s + (pg_s if db_url else 0)) / wall_s:.2f}",
                     f"{busy_share * 100:.0f}%"])  # type: ignore[type-var]
    print_table(f"2. {executions} queued executions of `true` over {envs} fake environments (2 machines x 4 slots "
                "each, process runtime), from one insert to every one final; times from the stored rows; CPU: "
                f"per execution, and cores used over the wall time, of {os.cpu_count()}",
                ["daemons", "envs each", "complete", "queued->1st start s", "queued->last start s",
                 "starts/s (1st->last)", "starts/s (from queued)", "queued->last end s", "wall s",
                 f"write-lock waits > {slow_ms:g} ms: count / sum", "replicas CPU ms", "PostgreSQL CPU ms",
                 "cores used (both)", "machine busy"], rows)


# -- 3. take-over ---------------------------------------------------------------------------


def take_over_trial(db_url: str | None, how: signal.Signals, reap: bool, lease_s: float | None, running: int,
                    timeout: float) -> tuple[float, float]:
    """Seconds from the signal to (another replica holding every lease of A's executions, all of
    them started again). reap: wait for a killed replica at once, as a supervisor does; until its
    parent waits for it, a killed process is a zombie, and its pid still answers."""
    sqlite = db_url is None
    with world("takeover", db_url, fake_envs(1, 1, running), lease_s) as w:
        w.start(1 if sqlite else 2)
        if not sqlite:
            wait_for("the environment to have an owner", lambda: sum(w.shares()) == 1, 60, 0.25)
        ids = w.queue("long", running)
        keys = [exec_key(i) for i in ids]
        def started_under_one_owner() -> dict[str, int] | None:
            if not all(e.status == "started" for e in w.executions(ids)):
                return None
            owners = w.lease_owners(keys)
            return owners if len(owners) == running and len(set(owners.values())) == 1 else None

        owners = wait_for("the executions to start, under one owner", started_under_one_owner, 60)
        attempts = {e.id: e.attempt for e in w.executions(ids)}
        # Which replica that is, as an operator sees it.
        listed = json.loads(subprocess.run([w.exe, "replicas", "--json"], env=w.env, capture_output=True,
                                           text=True, timeout=60, check=True).stdout)
        pid = next(r["pid"] for r in listed if set(ids) <= set(r["executions"]))
        owner = next(iter(owners.values()))
        victim = next(r for r in w.replicas if r.process.pid == pid)
        start = time.monotonic()
        victim.process.send_signal(how)
        if reap:
            victim.process.wait(10)
        if sqlite:  # the one daemon, restarted at once
            w.start(1)
        wait_for("another replica to hold every lease",
                 lambda: all(o != owner for o in w.lease_owners(keys).values()), timeout)
        taken_s = time.monotonic() - start
        wait_for("every execution to start again",
                 lambda: all(e.status == "started" and e.attempt > attempts[e.id] for e in w.executions(ids)),
                 timeout)
        return taken_s, time.monotonic() - start


def take_over(pg: pgserver.PostgresServer, trials: int, pause_trials: int, pause_leases: list[float],
              running: int) -> None:
    rows = []
    plans: list[tuple[str, bool, signal.Signals, bool, float | None, int]] = [
        ("SQLite, 1 daemon: SIGKILL, reaped, restarted at once (reference)", True, signal.SIGKILL, True, None, trials),
        ("PostgreSQL, 2 replicas: SIGKILL A, reaped at once", False, signal.SIGKILL, True, None, trials),
        ("PostgreSQL, 2 replicas: SIGKILL A, left a zombie (its parent does not wait)", False, signal.SIGKILL, False,
         None, min(2, pause_trials))]
    plans += [(f"PostgreSQL, 2 replicas: SIGSTOP A, VH_ORCH_LEASE_S={lease:g}", False, signal.SIGSTOP, False, lease,
               pause_trials) for lease in pause_leases]
    for label, sqlite, how, reap, lease_s, n in plans:
        results = [take_over_trial(None if sqlite else pg.new_database(), how, reap, lease_s, running,
                                   (lease_s or 15) * 3 + 60) for _ in range(n)]
        taken, again = [r[0] for r in results], [r[1] for r in results]
        rows.append([label, n, f"{statistics.median(taken):.2f}", f"{max(taken):.2f}",
                     f"{statistics.median(again):.2f}", f"{max(again):.2f}"])
    print_table(f"3. take-over of {running} running `sleep 60` executions on a fake environment (process runtime), "
                "seconds from the signal",
                ["what", "trials", "leases held by another p50", "max", "all started again p50", "max"], rows)


def print_slow(server_log: Path, slow_ms: float) -> None:
    found = slow_statements(server_log.read_text(errors="replace"))
    rows = [[len(v), f"{sum(v) / 1000:.1f}", f"{statistics.median(v):.0f}", f"{max(v):.0f}", k]
            for k, v in sorted(found.items(), key=lambda kv: -sum(kv[1]))[:8]]
    print_table(f"statements PostgreSQL logged as slower than {slow_ms:g} ms, all tables of this run",
                ["count", "total s", "p50 ms", "max ms", "statement"], rows or [[0, "", "", "", "(none)"]])


def slow_statements(server_log: str) -> dict[str, list[float]]:
    """The durations (ms) of the statements PostgreSQL logged as slow, by their first 100 characters."""
    found: dict[str, list[float]] = {}
    for match in re.finditer(r"duration: ([\d.]+) ms\s+(?:statement|execute [^:]*): (.*)", server_log):
        found.setdefault(" ".join(match[2].split())[:100], []).append(float(match[1]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes and one trial each (under 3 minutes)")
    parser.add_argument("--machines", type=int)
    parser.add_argument("--queued", type=int)
    parser.add_argument("--passes", type=int)
    parser.add_argument("--executions", type=int)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--only", default="1,2,3", help="which tables, e.g. 2,3")
    parser.add_argument("--keep", action="store_true", help="keep the homes (databases, replica logs)")
    parser.add_argument("--slow-ms", type=float, default=50,
                        help="PostgreSQL logs statements slower than this (ms; -1: none); the slowest are printed")
    args = parser.parse_args()
    quick = args.quick
    machines = args.machines or (1_000 if quick else 10_000)
    queued = args.queued or (10_000 if quick else 100_000)
    passes = args.passes or (5 if quick else 10)
    executions = args.executions or (60 if quick else 300)
    trials = args.trials or (1 if quick else 5)
    only = {int(x) for x in args.only.split(",")}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    started = time.monotonic()
    pg = pgserver.PostgresServer()
    # Every home of this run in one folder, removed at the end (the SQLite databases are large).
    # After the server: its folder must stay reachable by the postgres user.
    scratch = tempfile.mkdtemp(prefix="vh-orch-bench-replicas-")
    tempfile.tempdir = scratch
    if args.slow_ms >= 0:
        with psycopg.connect(pg.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET log_min_duration_statement = {args.slow_ms:g}")
            conn.execute("SELECT pg_reload_conf()")
    try:
        if 1 in only:
            reconcile_pass(pg, machines, queued, passes)
        if 2 in only:
            throughput(pg, executions, 6, [1, 2, 3], 300, args.slow_ms)
        if 3 in only:
            take_over(pg, trials, 1 if quick else 3, [15] if quick else [15, 5], 4)
        if args.slow_ms >= 0:
            print_slow(pg.folder / "server.log", args.slow_ms)
    finally:
        pg.stop()
        tempfile.tempdir = None
        if args.keep:
            print(f"\nhomes kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"the whole run took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
