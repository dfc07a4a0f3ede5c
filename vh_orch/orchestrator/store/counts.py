"""Aggregate reads for monitoring (/metrics): counted in SQL, never by loading every row."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import col, select

from vh_orch.orchestrator.models import Execution, LaunchFailure
from vh_orch.orchestrator.store.database import Database
from vh_orch.values import ExecutionStatus


class CountsStore(Database):

    def execution_counts(self) -> dict[str, int]:
        """How many executions are in each status (statuses with none are absent)."""
        with self.read() as s:
            rows = s.exec(select(Execution.status, func.count()).group_by(Execution.status)).all()
        return {status: count for status, count in rows}

    def oldest_queued(self) -> dict[int, datetime]:
        """Per environment id, when its longest-waiting queued execution was queued."""
        with self.read() as s:
            rows = s.exec(select(Execution.environment_id, func.min(Execution.queued_at))
                          .where(Execution.status == ExecutionStatus.QUEUED,
                                 col(Execution.queued_at).is_not(None))
                          .group_by(Execution.environment_id)).all()
        return {env_id: _aware(when) for env_id, when in rows if when is not None}

    def launch_failure_counts(self) -> dict[tuple[int, str], int]:
        """How many launch failures each environment id has recorded, by kind, ever."""
        with self.read() as s:
            rows = s.exec(select(LaunchFailure.environment_id, LaunchFailure.kind, func.count())
                          .group_by(LaunchFailure.environment_id, LaunchFailure.kind)).all()
        return {(env_id, kind): count for env_id, kind, count in rows}


def _aware(value: datetime | str) -> datetime:
    # An aggregate's result skips the column's type: SQLite gives its text form back.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
