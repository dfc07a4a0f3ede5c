"""All SQL vh-orch runs lives in this package: one Store, assembled from one part per concern.

The package itself imports nothing: `Store` (SQLAlchemy, SQLModel) loads on first use, so
that `quick` (the CLI's read path on the stdlib's sqlite3) does not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vh_orch.orchestrator.store.logs import LogChunk, LogLine
    from vh_orch.orchestrator.store.store import Store

__all__ = ["LogChunk", "LogLine", "Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from vh_orch.orchestrator.store.store import Store

        return Store
    if name in ("LogChunk", "LogLine"):
        from vh_orch.orchestrator.store import logs

        return getattr(logs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
