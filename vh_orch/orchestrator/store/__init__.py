"""All SQL vh-orch runs lives in this package: one Store, assembled from one part per concern."""

from vh_orch.orchestrator.store.core import ALLOWED_TRANSITIONS, CoreStore, LogLine
from vh_orch.orchestrator.store.fleet import FleetStore


class Store(FleetStore, CoreStore):
    """The one object the rest of vh-orch uses to read and write state."""


__all__ = ["ALLOWED_TRANSITIONS", "LogLine", "Store"]
