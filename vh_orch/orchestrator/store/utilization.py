"""Hardware use samples of running executions (CPU, memory, their GPUs), written in batches and
bounded per execution; and each execution's peak memory, kept up to date as samples arrive.

The bound: at most MAX_SAMPLES rows per execution. A batch that takes an execution past it first
removes every second one of its samples (its first and last kept), so a long run keeps samples
spread over its whole time, older ones sparser, and its rows never pass the bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, update
from sqlmodel import col, select

from vh_orch.orchestrator.models import Execution, UtilizationSample
from vh_orch.orchestrator.store.database import ROWS, Database

MAX_SAMPLES = 1800  # per execution: an hour at the default interval of 2 s before the first thinning
READ_LIMIT = MAX_SAMPLES


@dataclass(frozen=True, slots=True)
class NewSample:
    execution_id: int
    attempt: int
    time: datetime
    cpu_percent: float | None
    memory_bytes: int | None
    gpus: list[dict[str, Any]] | None = None  # [{index, utilization_percent, memory_used_bytes}]


@dataclass(slots=True)
class Tally:
    """What a writer knows of an execution's samples between batches: how many there are, and the
    most memory they saw (what the execution's peak_memory_bytes holds)."""

    count: int
    peak: int | None


class UtilizationStore(Database):

    def add_utilization(self, samples: Sequence[NewSample], tallies: dict[int, Tally]) -> None:
        """Store a batch of samples (of any executions) in one transaction, raise each execution's
        peak_memory_bytes to the most its samples saw, and thin those the batch would take past
        MAX_SAMPLES. `tallies` is the caller's memory between batches (an execution missing from it
        is counted here): with it, a batch costs no count and no update of a peak that did not rise."""
        if not samples:
            return
        batch: dict[int, int] = {}
        peaks: dict[int, int] = {}
        for sample in samples:
            batch[sample.execution_id] = batch.get(sample.execution_id, 0) + 1
            if sample.memory_bytes is not None:
                peaks[sample.execution_id] = max(peaks.get(sample.execution_id, 0), sample.memory_bytes)
        after: dict[int, Tally] = {}
        with self.write(ROWS) as s:
            for execution_id, n in batch.items():
                known = tallies.get(execution_id) or self._tally(s, execution_id)
                count = known.count
                if count + n > MAX_SAMPLES:
                    count = self._thin(s, execution_id)
                peak = known.peak
                if execution_id in peaks and (peak is None or peaks[execution_id] > peak):
                    peak = peaks[execution_id]
                    s.execute(update(Execution).where(col(Execution.id) == execution_id, or_(
                        col(Execution.peak_memory_bytes).is_(None), col(Execution.peak_memory_bytes) < peak))
                        .values(peak_memory_bytes=peak))
                after[execution_id] = Tally(count + n, peak)
            s.execute(insert(UtilizationSample), [
                {"execution_id": x.execution_id, "attempt": x.attempt, "time": x.time, "cpu_percent": x.cpu_percent,
                 "memory_bytes": x.memory_bytes, "gpus": x.gpus} for x in samples])
        tallies.update(after)  # only once the batch is stored

    @staticmethod
    def _tally(s: Any, execution_id: int) -> Tally:
        count = s.execute(select(func.count()).select_from(UtilizationSample)
                          .where(UtilizationSample.execution_id == execution_id)).scalar_one()
        peak = s.execute(select(Execution.peak_memory_bytes).where(Execution.id == execution_id)).scalar_one_or_none()
        return Tally(count, peak)

    @staticmethod
    def _thin(s: Any, execution_id: int) -> int:
        """Remove every second sample of an execution, its first and last kept; how many are left."""
        ids = list(s.execute(select(UtilizationSample.id).where(UtilizationSample.execution_id == execution_id)
                             .order_by(col(UtilizationSample.time), col(UtilizationSample.id))).scalars())
        doomed = ids[1:-1:2]
        for start in range(0, len(doomed), 500):
            s.execute(delete(UtilizationSample).where(col(UtilizationSample.id).in_(doomed[start:start + 500])))
        return len(ids) - len(doomed)

    def utilization_of(self, execution_id: int, after: datetime | None = None) -> list[UtilizationSample]:
        """An execution's samples in time order (every attempt's), those after `after` when it is given."""
        query = select(UtilizationSample).where(UtilizationSample.execution_id == execution_id)
        if after is not None:
            query = query.where(col(UtilizationSample.time) > after)
        with self.read() as s:
            return list(s.exec(query.order_by(col(UtilizationSample.time), col(UtilizationSample.id))
                               .limit(READ_LIMIT)))
