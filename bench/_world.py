"""A world of `vh-orch serve` replicas for the benchmarks: a home, its database (SQLite, or a fresh
PostgreSQL database), fake environments sharing one cloud state file, and the replica processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import fresh_home, project_folder
from sqlalchemy import bindparam, text, update
from sqlmodel import col, select

from vh_orch.bootstrap.runtimes import PID_FILE
from vh_orch.config.environments import parse_entry
from vh_orch.orchestrator.db import get_engine
from vh_orch.orchestrator.models import Execution, Project
from vh_orch.orchestrator.submit import SubmitRequest, keep_commit, prepare
from vh_orch.timeutil import utcnow

FINAL = ("complete", "error", "stopped")
YAML = ("- step: {name: noop, image: busybox, command: 'true'}\n"
        "- step: {name: long, image: busybox, command: 'sleep 60'}\n")


def wait_for(what: str, ready: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Replica:
    """One `vh-orch serve` process with a log of its own."""

    def __init__(self, exe: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen([exe, "serve", "--listen", "127.0.0.1:0"], env=env,
                                            stdout=out, stderr=subprocess.STDOUT)

    def started(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"vh-orch serve exited early:\n{self.log.read_text(errors='replace')[-3000:]}")
        return "vh-orch daemon started" in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class World:
    """A home, its database (SQLite, or a fresh PostgreSQL database), fake environments sharing one
    cloud state file, and the replicas serving it."""

    def __init__(self, prefix: str, db_url: str | None, environments: list[dict[str, Any]],
                 lease_s: float | None = None) -> None:
        self.settings, self.store = fresh_home(prefix, db_url)
        self.db_url = self.settings.db_url
        self.store.remove_environment("local", drain=False)  # fake environments only: equal shares
        state_file = self.settings.home / "cloud.json"
        for entry in environments:
            spec = parse_entry({**entry, "fake": {**entry["fake"], "state_file": str(state_file)}}, "bench")
            self.store.save_environment(spec.name, spec.cloud, spec.columns, spec.settings)
        self.folder = project_folder(self.settings, YAML)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VH_ORCH_")}
        self.env.update(VH_ORCH_HOME=str(self.settings.home), VH_ORCH_DB=self.db_url, VH_ORCH_USER="bench")
        if lease_s is not None:
            self.env["VH_ORCH_LEASE_S"] = str(lease_s)
        self.exe = str(Path(sys.executable).parent / "vh-orch")
        self.replicas: list[Replica] = []

    def start(self, count: int) -> None:
        new = [Replica(self.exe, self.env, self.settings.home / f"replica-{len(self.replicas) + i}.log")
               for i in range(count)]
        self.replicas += new
        for replica in new:
            wait_for("vh-orch serve to start", replica.started, 60)

    def shares(self) -> list[int]:
        """How many environments each live replica holds."""
        return [sum(1 for k in r.owns if k.startswith("env:")) for r in self.store.replicas(timedelta(seconds=10))]

    def queue(self, step: str, count: int) -> list[int]:
        """`count` queued executions of `step`, spread over the environments, in one transaction."""
        envs = self.store.active_environments()
        prepared = [prepare(self.store, self.settings, SubmitRequest(project="bench", step=step, adhoc=self.folder,
                                                                     environment=e.name, user="bench"))
                    for e in envs]
        commit = keep_commit(self.store, prepared[0])
        with self.store.write() as s:
            project_id = prepared[0].project_id
            last = s.execute(update(Project).where(Project.id == project_id)  # type: ignore[arg-type]
                             .values(execution_counter=Project.execution_counter + count)
                             .returning(Project.execution_counter)).scalar_one()
            now = utcnow()
            rows = []
            for i in range(count):
                p = prepared[i % len(prepared)]
                rows.append(Execution(project_id=project_id, counter=last - count + i + 1, commit_id=commit.id,  # type: ignore[arg-type]
                                      step=step, image=p.image, pull_policy=p.pull_policy,
                                      command=p.resolved.command, parameters=p.resolved.parameters,
                                      environment_variables=p.resolved.environment_variables,
                                      time_limit_s=p.resolved.time_limit_s, environment_id=p.environment_id,
                                      user="bench", status="queued", created_at=now, queued_at=now))
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]  # type: ignore[misc]

    def executions(self, ids: list[int]) -> list[Execution]:
        with self.store.read() as s:
            return list(s.exec(select(Execution).where(col(Execution.id).in_(ids))))

    def lease_owners(self, keys: list[str]) -> dict[str, int]:
        with get_engine(self.db_url).connect() as conn:
            found = conn.execute(text("SELECT key, owner FROM lease WHERE key IN :keys").bindparams(
                bindparam("keys", expanding=True)), {"keys": keys})
            return {k: o for k, o in found}

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self._end_leftovers()
        self.store.engine.dispose()

    def _end_leftovers(self) -> None:
        """Process groups of executions that a killed replica left and nobody ended (found by the
        pid file each execution's folder holds, and only if that process still runs in that folder)."""
        for pid_file in self.settings.executions_dir.glob(f"*/*/{PID_FILE}"):
            try:
                pid = int(pid_file.read_text())
                if Path(f"/proc/{pid}/cwd").resolve() == (pid_file.parent / "repository").resolve():
                    os.killpg(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass


@contextmanager
def world(*args: Any, **kwargs: Any) -> Iterator[World]:
    w = World(*args, **kwargs)
    try:
        yield w
    finally:
        w.stop()


def fake_envs(count: int, max_scale: int, slots: int) -> list[dict[str, Any]]:
    return [{"name": f"fake-{i}", "cloud": "fake", "max_scale": max_scale, "slots": slots, "idle_timeout": "5s",
             "pull_policy": "never", "fake": {"boot_seconds": 0.5, "runtime": "process"}} for i in range(count)]
