"""Housekeeping jobs the daemon runs on cron schedules (and `vh-orch cleanup` runs once).

Jobs and their schedules come from the daemon's settings file, `$VH_ORCH_HOME/daemon.yaml`:

    cleanup:
      - {job: scratch, cron: "*/10 * * * *"}
      - {job: machines, cron: "0 3 * * *", older_than: 7d}
      - {job: adhoc, cron: "30 3 * * *", older_than: 1d}
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from vh_orch.config.environments import parse_duration
from vh_orch.errors import ConfigError
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings
from vh_orch.values import FINAL_STATUSES

JOBS = ("scratch", "machines", "adhoc")


@dataclass(frozen=True)
class CleanupJob:
    job: str
    cron: str
    older_than_s: float


DEFAULT_JOBS = (
    CleanupJob("scratch", "*/10 * * * *", 0.0),
    CleanupJob("machines", "0 3 * * *", 7 * 86400.0),
    CleanupJob("adhoc", "30 3 * * *", 86400.0),
)


def load_jobs(settings: Settings) -> tuple[CleanupJob, ...]:
    path = settings.home / "daemon.yaml"
    if not path.exists():
        return DEFAULT_JOBS
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"cleanup"}:
        raise ConfigError(f"{path}: only a `cleanup:` list is expected")
    jobs = []
    for i, entry in enumerate(data.get("cleanup") or []):
        where = f"{path}: cleanup[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"job", "cron", "older_than"} or "job" not in entry:
            raise ConfigError(f"{where}: expected keys job, cron, older_than")
        if entry["job"] not in JOBS:
            raise ConfigError(f"{where}.job: {entry['job']!r} is not one of {', '.join(JOBS)}")
        default = next(j for j in DEFAULT_JOBS if j.job == entry["job"])
        cron = str(entry.get("cron", default.cron))
        _check_cron(cron, f"{where}.cron")
        older = parse_duration(entry.get("older_than", default.older_than_s), f"{where}.older_than")
        jobs.append(CleanupJob(entry["job"], cron, older))
    return tuple(jobs)


def _check_cron(expr: str, where: str) -> None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr)
    except ValueError as exc:
        raise ConfigError(f"{where}: {expr!r} is not a crontab expression: {exc}") from None


def run_job(job: CleanupJob, store: Store, settings: Settings, dry_run: bool = False) -> list[str]:
    """Run one job; returns what it removed (or would remove)."""
    if job.job == "scratch":
        return _scratch(store, settings, dry_run)
    if job.job == "machines":
        n = store.prune_machines(timedelta(seconds=job.older_than_s), dry_run)
        return [f"{n} machine row(s) finished more than {job.older_than_s:g} s ago"] if n else []
    return _adhoc(store, settings, job.older_than_s, dry_run)


def _scratch(store: Store, settings: Settings, dry_run: bool) -> list[str]:
    removed = []
    if not settings.executions_dir.exists():
        return removed
    for folder in sorted(settings.executions_dir.iterdir()):
        if not folder.name.isdigit():
            continue
        try:
            execution = store.get_execution(int(folder.name))
            finished = execution.status in FINAL_STATUSES
        except Exception:
            finished = True  # no such execution: nothing will ever use the folder
        if finished:
            removed.append(str(folder))
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
    return removed


def _adhoc(store: Store, settings: Settings, older_than_s: float, dry_run: bool) -> list[str]:
    removed = []
    if not settings.adhoc_dir.exists():
        return removed
    referenced = store.adhoc_archives()
    cutoff = time.time() - older_than_s
    for archive in sorted(settings.adhoc_dir.glob("*.tar")):
        # The age guard keeps an archive a submission has just written but not yet recorded.
        if str(archive) in referenced or archive.stat().st_mtime > cutoff:
            continue
        removed.append(str(archive))
        if not dry_run:
            Path(archive).unlink(missing_ok=True)
    return removed
