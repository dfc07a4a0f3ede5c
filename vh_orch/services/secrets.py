"""Project secrets for both faces (`vh-orch project secret ...` and /api/v0/projects/{id}/secrets/):
set (write-only: a value is never shown again), list (names and dates), remove."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vh_orch.orchestrator.secrets import check_secret_name, check_secret_value
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import ProjectSecret
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings


@dataclass(frozen=True)
class SecretView:
    """A secret as anyone sees it: never its value."""

    name: str
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "created_by": self.created_by, "created_at": iso(self.created_at),
                "updated_at": iso(self.updated_at)}


def _view(row: ProjectSecret) -> SecretView:
    return SecretView(name=row.name, created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at)


def set_secret(store: Store, settings: Settings, project_id: int, name: str, value: str,
               by: str | None = None) -> bool:
    """Store a secret encrypted with the installation's key; True when it is new (else replaced)."""
    from vh_orch.keyring import KeyRing

    check_secret_name(name)
    check_secret_value(value)
    return store.put_secret(project_id, name, KeyRing.load(settings.home).encrypt(value), by)


def list_secrets(store: Store, project_id: int) -> list[SecretView]:
    return [_view(row) for row in store.list_secrets(project_id)]


def remove_secret(store: Store, project_id: int, name: str) -> None:
    store.remove_secret(project_id, name)
