"""Several `vh-orch serve` replicas on one real PostgreSQL share a workload on the fake cloud (one
shared state file, as a real cloud's API is shared), while one replica is SIGKILLed and another
is paused (SIGSTOP) past its lease mid-run and then woken.

Afterwards, from stored rows, the engines and the cloud's record (the chaos suite's checks):
every execution complete exactly once, each log line of its last attempt stored once, its outputs
whole; no command of an attempt started twice; at most one instance per machine row and none
left running; no container left; and the woken replica let go of what was taken from it.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import chaos_check as check
import forkserve
from chaos_workload import Job, Submitter, make_project, plan_jobs
from conftest import VhOrch

pytestmark = pytest.mark.timeout(600)

LEASE_S = 4  # short, so that a take-over after a pause is quick; the default is 15 s
ENVS = ("fake-docker", "fake-process")
SETTLE_S = 240


class Replica:
    """One `vh-orch serve` process with a log of its own."""

    def __init__(self, vh: VhOrch, index: int, env: dict[str, str] | None = None) -> None:
        self.vh, self.index = vh, index
        self.env = {**vh.env, **(env or {})}
        self.log = vh.home.parent / f"replica-{index}.log"
        self.process: forkserve.Forked | subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = forkserve.serve(self.vh.exe, ["serve", "--listen", "127.0.0.1:0"], self.env, self.log)
        deadline = time.monotonic() + 60
        while "vh-orch daemon started" not in self.text():
            assert self.process.poll() is None, f"replica {self.index} exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"replica {self.index} did not start:\n{self.text()}"
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def environments(cloud_file: Path) -> list[dict[str, Any]]:
    common = {"cloud": "fake", "max_scale": 2, "idle_timeout": "2s", "max_attempts": 10, "pull_policy": "never",
              "launch_timeout": "15s", "boot_timeout": "30s"}
    return [{"name": name, **common,
             "fake": {"boot_seconds": 0.5, "runtime": name.split("-")[1], "state_file": str(cloud_file)}}
            for name in ENVS]


def replicas_by_pid(vh: VhOrch) -> dict[int, dict[str, Any]]:
    return {r["pid"]: r for r in vh.json("replicas")}


def wait_for(what: str, ready: Any, timeout: float, explain: Any = None) -> Any:
    """Wait for `ready()`; on time-out, say what was seen (`explain()`), so that a failure under
    load can be read from its report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(0.25)
    seen = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{seen}")


def cluster_id(db_url: str) -> str:
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT cluster_id FROM installation").fetchone()
    assert row is not None
    return str(row[0])


def lease_owners(db_url: str, keys: list[str]) -> dict[str, int | None]:
    """Who holds each lease now (0: nobody, after the execution ended or was requeued)."""
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = dict(conn.execute("SELECT key, owner FROM lease WHERE key = ANY(%s)", (keys,)).fetchall())
    return {key: rows.get(key) for key in keys}


def cloud_violations(cloud_file: Path, cluster: str) -> list[str]:
    """At most one instance for each machine row, none still running."""
    state = json.loads(cloud_file.read_text())
    instances = [i for i in state["instances"] if i["tags"].get("vh-orch-cluster") == cluster]
    per_row = Counter(i["tags"].get("vh-orch-machine") for i in instances)
    found = [f"machine row {row} got {n} instances" for row, n in per_row.items() if n > 1]
    found += [f"instance {i['instance_id']} (machine {i['tags'].get('vh-orch-machine')}) is still {i['state']}"
              for i in instances if i["state"] != "terminated"]
    return found


@pytest.mark.parametrize("count", [2, 3])
def test_replicas_share_work_and_take_over_from_a_killed_and_a_paused_one(
        count: int, tmp_path: Path, postgres: Any, docker_images: None) -> None:
    vh = VhOrch(tmp_path / "home")
    db_url = postgres.new_database()
    vh.env.update({"VH_ORCH_DB": db_url, "VH_ORCH_LEASE_S": str(LEASE_S)})
    vh("init")
    cloud_file = tmp_path / "cloud.json"
    (tmp_path / "envs.yaml").write_text(json.dumps({"environments": environments(cloud_file)}))
    vh("env", "apply", str(tmp_path / "envs.yaml"))
    vh("project", "add", "p")
    cluster = cluster_id(db_url)
    traces = tmp_path / "traces"
    traces.mkdir()
    project, input_file, input_sha = make_project(tmp_path, seed=count)
    submitter = Submitter(vh, project, input_file, traces)
    watch = check.ContainerWatch("local", dict(vh.env), cluster, time.time() - 1)
    watch.start()
    replicas = [Replica(vh, i) for i in range(count)]
    try:
        for replica in replicas:
            replica.start()

        # Every replica serves; the environments are shared out among them.
        # A replica that joins takes free environments, and the others give their surplus back.
        assert len(vh.json("replicas")) == count
        environments_in_all = len(vh.json("status"))  # ENVS and `local`, which `init` makes
        wait_for(f"the environments to be shared by {min(count, environments_in_all)} replicas",
                 lambda: sum(1 for r in vh.json("replicas") if r["environments"]) == min(count, environments_in_all)
                 and sum(len(r["environments"]) for r in vh.json("replicas")) == environments_in_all, 60)

        submitter.submit_all(plan_jobs(random.Random(count), ENVS, 6, (200, 300), (1, 4), 0.0, 1.0))

        # Pause a replica while it runs executions, past its lease; kill another (count 3: one that
        # runs executions too, at once; count 2: the other one, once the paused one is back).
        def busy_replicas() -> list[Replica]:
            owned = replicas_by_pid(vh)
            return [r for r in replicas if owned.get(r.pid, {}).get("executions")]

        busy = wait_for("replicas running executions",
                        lambda: (lambda b: b if len(b) >= min(2, count - 1) else None)(busy_replicas()), 90)
        paused = busy[0]
        killed = busy[1] if count == 3 else next(r for r in replicas if r is not paused)
        held_before = replicas_by_pid(vh)[paused.pid]
        paused.signal(signal.SIGSTOP)
        if count == 3:
            killed.signal(signal.SIGKILL)
        # Only wake it once another replica holds what it held (never a fixed sleep: under load the
        # take-over may come late, and a paused replica whose work nobody took may rightly go on).
        held_keys = [f"exec:{i}" for i in held_before["executions"]]

        def not_stuck() -> bool:  # each is held by another replica now, or has ended
            owners = lease_owners(db_url, held_keys)
            ended = {row["id"] for row in vh.json("exec", "list") if row["status"] in check.FINAL}
            return all(owners[f"exec:{i}"] not in (None, held_before["id"]) or i in ended
                       for i in held_before["executions"])

        def explain() -> str:
            rows = {row["id"]: row["status"] for row in vh.json("exec", "list")}
            tails = "\n".join(f"--- replica {r.index} (pid {r.pid}) ---\n{r.text()[-3000:]}" for r in replicas)
            return (f"paused replica {held_before['id']} held {held_before['executions']}; lease owners now "
                    f"{lease_owners(db_url, held_keys)}; statuses {rows}; replicas {vh.json('replicas')}\n{tails}")

        wait_for("another replica to take the paused one's executions over", not_stuck, 120, explain)
        paused_log = len(paused.text())
        paused.signal(signal.SIGCONT)
        if count == 2:
            time.sleep(3)
            killed.signal(signal.SIGKILL)
        wait_for("the woken replica to let go of what was taken from it",
                 lambda: any(s in paused.text()[paused_log:] for s in ("taken by another replica",
                                                                        "no longer holds its lease")), 60)

        # Everything ends; idle machines are retired.
        wait_for("every execution to end",
                 lambda: all(row["status"] in check.FINAL for row in vh.json("exec", "list")), SETTLE_S)
        wait_for("idle machines to be retired", lambda: not check.live_machines(vh, {"fake"}), 60)
        infos = {row["id"]: vh.json("exec", "info", str(row["id"])) for row in vh.json("exec", "list")}
        violations = check.check_final(infos) + check.check_reasons(infos) + check.check_machines(vh, {"fake"})
        violations += [f"execution {i} ended {info['status']}: {info['status_reason']}"
                       for i, info in infos.items() if info["status"] != "complete"]
        for info in infos.values():
            if info["status"] == "complete":
                violations += check.check_complete(vh, info, submitter.submitted[info["id"]].expected(input_sha),
                                                   tmp_path / "downloads" / str(info["id"]))
            events = [json.loads(line) for line in vh("exec", "logs", str(info["id"]), "--json").stdout.splitlines()]
            ends = [e for e in events if e["kind"] == "status" and e["text"].split(":")[0] in check.FINAL]
            if len(ends) != 1:
                violations.append(f"execution {info['id']} has {len(ends)} final status events")
        violations += check.wait_no_containers({"local": dict(vh.env)}, cluster, timeout=45)
        intervals = list(watch.intervals.values())
        violations += check.check_overlaps(intervals) + check.check_processes(traces)
        violations += check.check_starts(infos, intervals, traces)
        violations += cloud_violations(cloud_file, cluster)
        assert not violations, "\n".join(violations)
        assert sum(info["attempt"] for info in infos.values()) > len(infos), \
            "nothing was taken over: the faults missed the running work"
    finally:
        for replica in replicas:
            replica.stop()
        watch.stop()
        check.remove_containers(dict(vh.env), cluster)


def frozen(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): state T in /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_a_replica_frozen_before_it_starts_a_command_does_not_start_it_once_its_lease_is_gone(
        tmp_path: Path, postgres: Any, docker_images: None) -> None:
    """A replica freezes (SIGSTOP at the `command-start` failpoint) with an execution's inputs in place and
    its command not yet started, past its lease; another replica takes the execution over and runs it
    again. Woken, the frozen one must not start its command: the execution runs once, not twice."""
    vh = VhOrch(tmp_path / "home")
    db_url = postgres.new_database()
    vh.env.update({"VH_ORCH_DB": db_url, "VH_ORCH_LEASE_S": str(LEASE_S)})
    vh("init")
    cloud_file = tmp_path / "cloud.json"
    (tmp_path / "envs.yaml").write_text(json.dumps({"environments": environments(cloud_file)[:1]}))
    vh("env", "apply", str(tmp_path / "envs.yaml"))
    vh("project", "add", "p")
    cluster = cluster_id(db_url)
    traces = tmp_path / "traces"
    traces.mkdir()
    project, input_file, input_sha = make_project(tmp_path, seed=7)
    submitter = Submitter(vh, project, input_file, traces)
    watch = check.ContainerWatch("local", dict(vh.env), cluster, time.time() - 1)
    watch.start()
    first = Replica(vh, 0, {"VH_ORCH_FAILPOINT": "command-start=stop"})
    second = Replica(vh, 1)
    try:
        first.start()
        job = Job(ENVS[0], 40, 1, 0.0)
        execution_id = submitter.submit(job)
        wait_for("the first replica to freeze before the command starts", lambda: frozen(first.pid), 90,
                 lambda: first.text())
        second.start()
        done = wait_for("the second replica to run the execution to its end",
                        lambda: (lambda info: info if info["status"] in check.FINAL else None)(
                            vh.json("exec", "info", str(execution_id))), SETTLE_S, lambda: second.text())
        first.signal(signal.SIGCONT)

        def runs_of_it() -> list[check.Interval]:  # every container of it, from the engine's own events
            return [i for i in watch.intervals.values() if i.execution == execution_id]

        # The woken replica's runner either lets go (its own word, after its lease check) or, wrongly,
        # starts the command of attempt 1 again.
        wait_for("the woken replica's runner to let the execution go",
                 lambda: f"execution {execution_id}: exec:{execution_id}:" in first.text() or len(runs_of_it()) > 1,
                 60, lambda: first.text())
        assert done["status"] == "complete" and done["attempt"] == 2, done
        assert check.check_complete(vh, done, job.expected(input_sha), tmp_path / "downloads" / "1") == []
        assert check.wait_no_containers({"local": dict(vh.env)}, cluster, timeout=45) == []
        assert len(runs_of_it()) == 1, f"execution {execution_id} ran {len(runs_of_it())} times: {runs_of_it()}"
    finally:
        for replica in (first, second):
            replica.stop()
        watch.stop()
        check.remove_containers(dict(vh.env), cluster)
