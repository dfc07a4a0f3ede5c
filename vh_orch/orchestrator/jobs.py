"""The daemon's periodic jobs, declared as a table and scheduled from it.

`Daemon.jobs()` lists each job with its interval (or, for the operator's cleanup jobs, its cron
line): the daemon's whole life on one screen. `scheduler_for` turns the table into APScheduler
jobs that never run beside themselves and, when late, run once (coalesced) rather than skip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger


@dataclass(frozen=True)
class PeriodicJob:
    """A job the daemon runs again and again: every `every_s` seconds, or on a `cron` line (UTC)."""

    id: str
    run: Callable[..., None]
    every_s: float | None = None
    cron: str | None = None
    args: tuple[object, ...] = ()  # what `run` is called with
    at_start: bool = False  # its first run at once, not one interval after the start

    def __post_init__(self) -> None:
        assert (self.every_s is None) != (self.cron is None), f"job {self.id}: an interval or a cron line"

    def trigger(self) -> BaseTrigger:
        if self.every_s is not None:
            return IntervalTrigger(seconds=self.every_s, timezone=UTC)
        assert self.cron is not None
        return CronTrigger.from_crontab(self.cron, timezone=UTC)


def scheduler_for(jobs: list[PeriodicJob]) -> BackgroundScheduler:
    """A scheduler (not started yet) with the jobs of the table."""
    scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
    for job in jobs:
        first = {"next_run_time": datetime.now(UTC)} if job.at_start else {}
        scheduler.add_job(job.run, job.trigger(), args=list(job.args), id=job.id, misfire_grace_time=None, **first)
    return scheduler
