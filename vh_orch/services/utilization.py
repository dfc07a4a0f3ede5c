"""An execution's hardware use, as both faces show it (`vh-orch exec utilization`, and
`GET /api/v0/executions/{id}/utilization/` behind the execution page's Hardware chart)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vh_orch.errors import UserInputError
from vh_orch.services.views import utilization_dict
from vh_orch.timeutil import as_utc

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store


def samples(store: Store, execution_id: int, after: datetime | None = None) -> list[dict[str, Any]]:
    """Its samples in time order (those after `after`, when given): {time, cpu_percent, memory_bytes,
    gpus: [{index, utilization_percent, memory_used_bytes}]}."""
    return [utilization_dict(s) for s in store.utilization_of(execution_id, after)]


def sample_time(text: str, field: str = "after") -> datetime:
    """A sample's `time` as a client sends it back (ISO-8601); a UserInputError naming `field` otherwise."""
    try:
        if len(text) > 40:
            raise ValueError
        return as_utc(datetime.fromisoformat(text)).astimezone(UTC)
    except ValueError:
        raise UserInputError(f"{text[:50]!r} is not a time: give a sample's `time`, e.g. 2026-12-07T08:00:00.000000Z",
                             field=field) from None
