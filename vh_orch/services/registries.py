"""Private image registries for the operator (`vh-orch registry ...`): credentials stored encrypted, one
set per host for every environment or per environment; passwords never shown again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vh_orch.errors import UserInputError, about
from vh_orch.orchestrator.registries import check_registry_host
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings


@dataclass(frozen=True)
class RegistryView:
    host: str
    environment: str | None  # None: every environment
    username: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "environment": self.environment, "username": self.username,
                "created_at": iso(self.created_at)}


def _environment_id(store: Store, environment: str | None) -> int | None:
    if environment is None:
        return None
    with about("environment"):
        return store.get_environment(environment).id


def add_registry(store: Store, settings: Settings, host: str, username: str, password: str,
                 environment: str | None = None) -> bool:
    """Store a registry's credentials (replacing any for the same host and environment); True when new."""
    from vh_orch.keyring import KeyRing

    host = check_registry_host(host)
    if not username or any(c.isspace() for c in username):
        raise UserInputError("give the registry's user name (no spaces)", field="username")
    if not password:
        raise UserInputError("the password cannot be empty", field="password")
    env_id = _environment_id(store, environment)
    return store.put_registry(host, env_id, username, KeyRing.load(settings.home).encrypt(password))


def list_registries(store: Store) -> list[RegistryView]:
    return [RegistryView(host=row.host, environment=env, username=row.username, created_at=row.created_at)
            for row, env in store.list_registries()]


def remove_registry(store: Store, host: str, environment: str | None = None) -> None:
    store.remove_registry(check_registry_host(host), _environment_id(store, environment))
