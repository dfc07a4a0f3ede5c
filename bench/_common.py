"""Shared set-up for the benchmarks: a throw-away vh-orch home with one ad-hoc project."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from vh_orch.orchestrator.db import upgrade
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings


def fresh_home(prefix: str, db_url: str | None = None) -> tuple[Settings, Store]:
    """A new home; its database is SQLite inside it, or `db_url` (an empty database, e.g. PostgreSQL)."""
    home = Path(tempfile.mkdtemp(prefix=f"vh-orch-bench-{prefix}-"))
    settings = Settings(home=home, db_url=db_url or f"sqlite:///{home / 'state.db'}")
    settings.ensure_dirs()
    upgrade(settings.db_url)
    store = Store(settings.db_url)
    store.ensure_environment("local", "local", min_scale=1, max_scale=1, slots=1,
                             settings={"runtime": "auto", "pull_policy": "never"})
    store.create_project("bench", None, None)
    return settings, store


def project_folder(settings: Settings, valohai_yaml: str) -> Path:
    folder = settings.home / "project"
    folder.mkdir(exist_ok=True)
    (folder / "valohai.yaml").write_text(valohai_yaml)
    return folder


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


class SSHBenchHost:
    """A root sshd on 127.0.0.2:22 (as in the tests), a one-host `ssh` environment named `pool` in a
    fresh vh-orch home, and `vh-orch serve` for it; `ssh` is the bare OpenSSH command for the reference."""

    def __init__(self, prefix: str) -> None:
        import os
        import subprocess
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import sshhosts

        from vh_orch.config.environments import parse_entry

        self.scratch = Path(tempfile.mkdtemp(prefix=f"vh-orch-bench-{prefix}-"))
        client_key = self.scratch / "client_key"
        public = sshhosts.keygen(client_key, "bench")
        self.host = sshhosts.make_host(self.scratch, 2)
        self.host.start(public)
        known = self.scratch / "known_hosts"
        known.write_text(f"{self.host.address} {self.host.host_key}\n")
        self.ssh = ["ssh", "-i", str(client_key), "-o", f"UserKnownHostsFile={known}", "-o",
                    "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{self.host.address}"]
        self.settings, self.store = fresh_home(prefix)
        spec = parse_entry({"name": "pool", "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never",
                            "ssh": {"user": "root", "private_key_file": str(client_key),
                                    "hosts": [{"address": self.host.address, "host_key": self.host.host_key,
                                               "workdir": str(self.scratch / "workdir")}]}}, "bench")
        self.store.save_environment(spec.name, spec.cloud, spec.columns, spec.settings)
        self.env = dict(os.environ, VH_ORCH_HOME=str(self.settings.home), VH_ORCH_LISTEN="127.0.0.1:0")
        self._log = open(self.settings.home / "serve.log", "wb")
        self.daemon = subprocess.Popen([str(Path(sys.executable).parent / "vh-orch"), "serve"], env=self.env,
                                       stdout=self._log, stderr=subprocess.STDOUT)

    def run(self, step: str, folder: Path, inputs: dict[str, list[str]] | None = None,  # type: ignore[no-untyped-def]
            timeout: float = 600):
        """Submit and wait; returns (seconds to the first log line, the finished execution)."""
        import time
        from datetime import UTC, datetime

        from vh_orch.orchestrator.wakeup import notify_daemon
        from vh_orch.orchestrator.submit import SubmitRequest, submit

        t0 = datetime.now(UTC)
        execution = submit(self.store, self.settings, SubmitRequest(project="bench", step=step, adhoc=folder,
                                                                    environment="pool", inputs=inputs or {}))
        notify_daemon(self.settings)
        deadline = time.monotonic() + timeout
        while True:
            current = self.store.get_execution(execution.id)  # type: ignore[arg-type]
            if current.status in ("complete", "error", "stopped"):
                break
            assert time.monotonic() < deadline, "execution did not finish"
            time.sleep(0.005)
        assert current.status == "complete", current.status_reason
        line = next(e for e in self.store.events_after(execution.id, 0, limit=10) if e.kind == "log")  # type: ignore[arg-type]
        return (line.time - t0).total_seconds(), current

    def close(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(60)
        self.host.stop()
