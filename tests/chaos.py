"""Seeded, repeatable chaos runs of vh-orch, through the real CLI and `vh-orch serve`.

`run(seed, config, world, folder) -> Report`: a fresh home (`vh-orch init`), environments
(the `fake` cloud on the docker and the process runtime, SSH hosts: a plain one, one behind a
connection-cutting proxy, one on a Docker engine of its own), a workload (chaos_workload.py)
and faults, then the invariants (chaos_check.py). The seed fixes the plan: the workload, the
order and timing of daemon kills (SIGKILL, SIGTERM) and armed failpoints, and the times of
the other faults (cut connections, an engine restart, SQLite held busy); `plan` in the report
is that schedule, and the same seed replays it. What the machine makes of the timing varies.

Two lanes run the plan: the daemon lane starts `vh-orch serve` (armed with a failpoint or
not), waits for it to die or kills it, and restarts it, as systemd would; the fault lane fires
the timed faults and late submissions meanwhile. Then the daemon runs clean until everything
has settled, and the checks read what is stored.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chaos_check as check
from chaos_faults import Daemon, hold_write_lock
from chaos_plan import ALL_ENVS, DISK_MB, FAILPOINTS, Config, Fault, Plan, Start, make_plan  # noqa: F401
from chaos_workload import Submitter, make_project
from chaos_world import World, mount_tmpfs, unmount
from conftest import VhOrch

CLOUDS = {"fake", "ssh"}


@dataclass
class Report:
    seed: int
    config: str
    plan: list[str]
    home: Path
    kills: Counter[str] = field(default_factory=Counter)  # SIGKILL, SIGTERM, failpoint
    faults: Counter[str] = field(default_factory=Counter)
    fired: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds each part of the run took
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def kill_points(self) -> int:
        return sum(self.kills.values())

    def count(self, counter: Counter[str], key: str) -> None:
        with self._lock:
            counter[key] += 1

    def text(self) -> str:
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items())
        lines = [f"chaos run {self.config}, seed {self.seed} ({self.seconds:.0f} s: {phases}; home {self.home}, "
                 f"daemon log {self.home.parent / 'serve.log'})",
                 f"kill points {self.kill_points} {dict(self.kills)}; faults {dict(self.faults)}; "
                 f"executions {dict(self.statuses)}",
                 f"failpoints fired: {', '.join(self.fired) or 'none'}; "
                 f"not reached: {', '.join(self.missed) or 'none'}",
                 "plan:", *(f"  {line}" for line in self.plan)]
        lines += [f"note: {n}" for n in self.notes] + [f"VIOLATION: {v}" for v in self.violations]
        return "\n".join(lines)


class Run:
    """One chaos run: the home, its environments and workload, the two lanes, the checks."""

    def __init__(self, seed: int, config: Config, world: World, folder: Path) -> None:
        self.seed, self.config, self.world, self.folder = seed, config, world, folder
        self.envs = config.envs
        self.plan = make_plan(seed, config, self.envs)
        self.vh = VhOrch(folder / "home")
        self.report = Report(seed, config.name, self.plan.lines(), self.vh.home, notes=list(world.notes))
        self.daemon = Daemon(self.vh)
        self.traces = folder / "traces"
        self.disks = [folder / "disk-data", folder / "disk-workdir"] if config.full_disk else []
        self.workdirs = {role: (self.disks[1] if role == "plain" and self.disks else folder / f"workdir-{role}")
                         for role in ("plain", "cut", "engine")}
        self.watches: list[check.ContainerWatch] = []
        self.submitter: Submitter | None = None
        self.lanes_done = threading.Event()

    # -- set-up ----------------------------------------------------------------------------------

    def environments(self) -> list[dict[str, Any]]:
        # Short deadlines and blocks, or a run waits them out instead of checking anything: a launch
        # row a killed daemon left without an instance waits for launch_timeout (5 min by default)
        # while it counts against max_scale; a one-host pool whose host answered "busy" (held by
        # our own machine still being released) is blocked for capacity_block (5 min by default).
        common = {"idle_timeout": "2s", "max_attempts": 10, "pull_policy": "never", "launch_timeout": "15s",
                  "boot_timeout": "30s", "bootstrap_timeout": "60s", "capacity_block": "10s"}
        fake = {"cloud": "fake", "max_scale": 2, **common}
        ssh = {"user": "root", "private_key_file": str(self.world.client_key), "connect_timeout": "3s",
               "unreachable_timeout": "20s"}
        envs = {
            "fake-docker": {**fake, "fake": {"boot_seconds": 0.5, "runtime": "docker"}},
            "fake-process": {**fake, "fake": {"boot_seconds": 0.5, "runtime": "process"}},
        }
        for role in ("plain", "cut", "engine"):
            envs[f"ssh-{role}"] = {"cloud": "ssh", **common,
                                   "ssh": {**ssh, "hosts": [self.world.host_entry(role, self.workdirs[role])]}}
        if self.disks:
            envs["fake-docker"]["datastore"] = f"file://{self.disks[0]}"
        return [{"name": name, **envs[name]} for name in self.envs]

    def set_up(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.traces.mkdir(exist_ok=True)
        for disk in self.disks:
            mount_tmpfs(disk, DISK_MB)
            self.report.count(self.report.faults, "full disk")
        self.vh("init")
        (self.folder / "envs.yaml").write_text(json.dumps({"environments": self.environments()}))
        self.vh("env", "apply", str(self.folder / "envs.yaml"))
        self.vh("project", "add", "p")
        project, input_file, self.input_sha = make_project(self.folder, self.seed)
        self.submitter = Submitter(self.vh, project, input_file, self.traces)
        cluster = self.vh.cluster_id()
        assert cluster
        self.cluster = cluster
        for name, env in self.world.engines().items():
            self.watches.append(check.ContainerWatch(name, env, cluster, time.time() - 1))
            self.watches[-1].start()

    # -- the lanes ---------------------------------------------------------------------------------

    def drive_daemon(self) -> None:
        for start in self.plan.starts:
            if self.daemon.alive():
                self.report.violations.append(f"the daemon still ran before start {start.describe()!r}")
                self.daemon.kill(signal.SIGKILL)
            self.daemon.start(start.failpoint)
            if start.failpoint:
                self.await_failpoint(start.failpoint)
            elif start.kill_after is not None:
                time.sleep(start.kill_after)
                if not self.daemon.alive():
                    self.unexpected_exit()
                    continue
                took = self.daemon.kill(start.sig)
                self.report.count(self.report.kills, signal.Signals(start.sig).name)
                if start.sig == signal.SIGTERM and took > 90:
                    self.report.violations.append(f"the daemon took {took:.0f} s to stop after SIGTERM")

    def await_failpoint(self, name: str) -> None:
        """Wait (bounded) for an armed daemon to kill itself; a point not reached is noted."""
        deadline = time.monotonic() + self.config.failpoint_wait_s
        while time.monotonic() < deadline:
            if self.daemon.wait_dead(1.0):
                if self.daemon.exit_code() == -signal.SIGKILL:
                    self.report.fired.append(name)
                    self.report.count(self.report.kills, "failpoint")
                else:
                    self.unexpected_exit()
                return
            if self.all_final():
                break
        self.report.missed.append(name)
        self.daemon.kill(signal.SIGKILL)  # armed still: it must not fire later, in the clean part
        self.report.count(self.report.kills, "SIGKILL")

    def unexpected_exit(self) -> None:
        tail = self.vh.daemon_log.read_text(errors="replace").splitlines()[-15:]
        self.report.violations.append(f"the daemon exited by itself with code {self.daemon.exit_code()}; "
                                      "its log ends:\n    " + "\n    ".join(tail))

    def drive_faults(self, t0: float) -> None:
        """The timed faults and late submissions; the first submissions go at once, while the
        first daemon starts."""
        assert self.submitter is not None
        try:
            if self.plan.pipeline is not None:
                self.submitter.submit_pipeline(self.plan.pipeline)
            self.submitter.submit_all([job for job in self.plan.jobs if not job.submit_at])
            for fault in self.plan.faults:
                delay = t0 + fault.at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.inject(fault)
        except Exception as exc:  # a refused submission, a fault that could not be made
            self.report.violations.append(f"the fault lane broke: {exc!r}")
        finally:
            self.lanes_done.set()

    def inject(self, fault: Fault) -> None:
        if fault.kind == "submit":
            assert self.submitter is not None
            self.submitter.submit(self.plan.jobs[fault.arg])
            return
        if fault.kind == "cut":
            if "ssh-cut" not in self.envs or self.world.proxy is None:
                return
            self.cut(fault.arg)
        elif fault.kind == "engine":
            if self.world.engine is None or "ssh-engine" not in self.envs:
                return
            self.restart_engine(fault.arg)
        elif fault.kind == "busy":
            waited = hold_write_lock(self.vh.home / "state.db", fault.arg)
            if waited > 30:
                self.report.notes.append(f"the write lock took {waited:.0f} s to get")
        self.report.count(self.report.faults, fault.kind)

    def cut(self, delay: float) -> None:
        """Cut the proxied host's connections `delay` s after one is open (waiting a little for one)."""
        proxy = self.world.proxy
        assert proxy is not None
        deadline = time.monotonic() + 10
        while not proxy.open_connections() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        if not proxy.cut():
            self.report.notes.append("a cut found no SSH connection open")

    def restart_engine(self, delay: float) -> None:
        """Restart the second engine `delay` s after one of our containers runs on it (waiting a little)."""
        engine = self.world.engine
        assert engine is not None
        deadline = time.monotonic() + 15
        while not check.containers(engine.env, self.cluster, running=True) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(delay)
        engine.restart()

    def all_final(self) -> bool:
        """Every job submitted (or the lane that submits them gone), every execution final."""
        assert self.submitter is not None
        if len(self.submitter.submitted) < len(self.plan.jobs) and not self.lanes_done.is_set():
            return False
        if self.plan.pipeline is not None and not self.submitter.pipelines and not self.lanes_done.is_set():
            return False
        rows = self.vh.json("exec", "list")
        pipelines = self.vh.json("pipeline", "list") if self.submitter.pipelines else []
        return all(row["status"] in check.FINAL for row in [*rows, *pipelines])

    # -- settling and the checks -------------------------------------------------------------------

    def settle(self) -> None:
        """The last daemon runs clean until every execution is final and idle machines are retired."""
        if not self.daemon.alive():
            self.unexpected_exit()
            self.daemon.start()
        deadline = time.monotonic() + self.config.settle_s
        while not self.all_final() and time.monotonic() < deadline:
            time.sleep(0.5)
        while check.live_machines(self.vh, CLOUDS) and time.monotonic() < deadline + 60:
            time.sleep(0.5)
        left = check.wait_no_containers(self.world.engines(), self.cluster, timeout=45)
        self.report.violations += left
        if not self.daemon.alive():
            self.unexpected_exit()

    def check(self) -> None:
        infos = {row["id"]: self.vh.json("exec", "info", str(row["id"])) for row in self.vh.json("exec", "list")}
        self.report.statuses.update(info["status"] for info in infos.values())
        v = self.report.violations
        v += check.check_final(infos)
        v += check.check_reasons(infos)
        reasons = Counter(f"{i['status']}: {i['status_reason']}" for i in infos.values() if i["status"] != "complete")
        self.report.notes += [f"{n} x {reason}" for reason, n in reasons.most_common()]
        v += check.check_machines(self.vh, CLOUDS)
        v += check.check_hosts([self.workdirs[role.removeprefix("ssh-")] for role in self.envs
                                if role.startswith("ssh-")], self.cluster)
        complete = [info for info in infos.values() if info["status"] == "complete"]
        assert self.submitter is not None
        expected = {eid: job.expected(self.input_sha) for eid, job in self.submitter.submitted.items()}
        for pipeline_id, job in self.submitter.pipelines.items():
            info = self.vh.json("pipeline", "info", str(pipeline_id))
            self.report.notes.append(f"pipeline {pipeline_id}: {info['status']} ({info['status_reason']}); nodes "
                                     + ", ".join(f"{n['name']} {n['status']}" for n in info["nodes"]))
            v += check.check_pipeline(self.vh.home / "state.db", info, infos)
            for node in info["nodes"]:
                for eid in node["executions"]:
                    expected[eid] = job.expected(node["name"])

        def one(info: dict[str, Any]) -> list[str]:
            if info["id"] not in expected:
                return [f"execution {info['id']} was neither submitted nor made by a pipeline's node"]
            return check.check_complete(self.vh, info, expected[info["id"]],
                                        self.folder / "downloads" / str(info["id"]))

        with ThreadPoolExecutor(3) as pool:
            for found in pool.map(one, complete):
                v += found
        intervals = [i for watch in self.watches for i in watch.intervals.values()]
        if self.world.engine is not None:
            check.close_at_restarts([i for i in intervals if i.engine == "second"], self.world.engine.restarts)
        self.report.notes.append(f"containers started: {dict(Counter(i.engine for i in intervals))}")
        v += check.check_overlaps(intervals)
        v += check.check_processes(self.traces)
        v += check.check_starts(infos, intervals, self.traces)
        self.note_orphans(infos)
        log = self.vh.daemon_log.read_text(errors="replace")
        if log.count("Traceback"):
            self.report.notes.append(f"{log.count('Traceback')} traceback(s) in the daemon's log")

    def note_orphans(self, infos: dict[int, dict[str, Any]]) -> None:
        """Files in the datastores that no output row names: uploads of attempts that never recorded
        them (a crash in between, a full disk). Garbage, not a loss; noted."""
        named = {o["uri"].removeprefix("file://") for info in infos.values() for o in info["outputs"]}
        roots = [self.vh.home / "data", *self.disks[:1]]
        files = {str(p) for root in roots for p in root.rglob("*") if p.is_file()}
        if files - named:
            self.report.notes.append(f"{len(files - named)} file(s) in the datastore that no output row names")

    def tear_down(self) -> None:
        if self.daemon.alive():
            self.daemon.kill(signal.SIGTERM)
        for watch in self.watches:
            watch.stop()
        if getattr(self, "cluster", None):
            for env in self.world.engines().values():
                check.remove_containers(env, self.cluster)
        for disk in self.disks:
            unmount(disk)

    def phase(self, name: str, step: Any) -> None:
        began = time.monotonic()
        try:
            step()
        finally:
            self.report.phases[name] = time.monotonic() - began

    def run(self) -> Report:
        began = time.monotonic()
        print(f"chaos run {self.config.name}, seed {self.seed}", flush=True)
        try:
            self.phase("set-up", self.set_up)
            faults = threading.Thread(target=self.drive_faults, args=(time.monotonic(),), daemon=True)
            faults.start()
            self.phase("faults", self.drive_daemon)
            faults.join(self.config.window_s + 300)
            self.phase("settle", self.settle)
            self.daemon.kill(signal.SIGTERM)
            self.phase("checks", self.check)
        except Exception:  # the harness or the CLI broke: that is reported too, with the traceback
            self.report.violations.append(f"the run broke:\n{traceback.format_exc()}")
        finally:
            self.tear_down()
            self.report.seconds = time.monotonic() - began
        return self.report


def run(seed: int, config: Config, world: World, folder: Path) -> Report:
    """One seeded chaos run in `folder` (a fresh home inside it); the report says what happened."""
    return Run(seed, config, world, folder).run()
