"""An installation's own history as a trace, for `vh-orch simulate --from-history`: each execution that
ran and ended in the window, submitted when it was created and running as long as it ran, on the
environments as they are defined now. Replayed under another policy or price (`--envs` with another
file), it shows what a change would have cost before making it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from vh_orch.config.environments import EnvSpec
from vh_orch.errors import UserInputError
from vh_orch.simulation.trace import Submission
from vh_orch.timeutil import as_utc

# An environment row's columns that make up its spec (config/environments.py parse_entry's `columns`).
SPEC_COLUMNS = ("min_scale", "max_scale", "slots", "max_attempts", "idle_timeout_s", "spot", "price_per_hour",
                "region", "instance_type")


def history_trace(runs: Iterable[tuple[datetime, datetime, datetime, str]], since: datetime) -> list[Submission]:
    """(created_at, started_at, ended_at, environment) of executions that ran, as submissions counted from
    `since`, in submission order."""
    trace = [Submission(max(0.0, (as_utc(created) - since).total_seconds()),
                        max(0.0, (as_utc(ended) - as_utc(started)).total_seconds()), env)
             for created, started, ended, env in runs]
    if not trace:
        raise UserInputError("no execution ran and ended in that window: give more --days, or a trace file")
    trace.sort(key=lambda s: s.submit_s)
    return trace


def specs_of(environments: Iterable[Any]) -> list[EnvSpec]:
    """Stored environment rows as the specs an environments file would give."""
    return [EnvSpec(e.name, e.cloud, {k: getattr(e, k) for k in SPEC_COLUMNS}, dict(e.settings or {}))
            for e in environments]
