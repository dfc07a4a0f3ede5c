"""Private image registries' credentials: host, environment (or every one), user name and the password
encrypted (vh_orch/keyring.py)."""

from __future__ import annotations

from sqlalchemy import or_
from sqlmodel import col, select

from vh_orch.errors import NotFound
from vh_orch.orchestrator.models import Environment, RegistryCredential
from vh_orch.orchestrator.store.database import Database
from vh_orch.timeutil import utcnow


class RegistriesStore(Database):

    def put_registry(self, host: str, environment_id: int | None, username: str, encrypted: str) -> bool:
        """Store a registry's credentials (for one environment, or None: every one); True when new."""
        with self.write() as s:
            row = s.exec(select(RegistryCredential).where(RegistryCredential.host == host,
                                                          _same_environment(environment_id))).first()
            created = row is None
            if row is None:
                row = RegistryCredential(host=host, environment_id=environment_id, username=username,
                                         password=encrypted)
            else:
                row.username, row.password, row.created_at = username, encrypted, utcnow()
            s.add(row)
            return created

    def list_registries(self) -> list[tuple[RegistryCredential, str | None]]:
        """Every stored credential with its environment's name (None: every environment), by host."""
        with self.read() as s:
            rows = s.exec(select(RegistryCredential, Environment.name)
                          .join(Environment, col(RegistryCredential.environment_id) == Environment.id, isouter=True)
                          .order_by(col(RegistryCredential.host), col(RegistryCredential.environment_id)))
            return [(row, name) for row, name in rows]

    def remove_registry(self, host: str, environment_id: int | None) -> None:
        with self.write() as s:
            row = s.exec(select(RegistryCredential).where(RegistryCredential.host == host,
                                                          _same_environment(environment_id))).first()
            if row is None:
                raise NotFound(f"no credentials for registry {host!r}"
                               + (" in that environment" if environment_id is not None else " for every environment")
                               + "; see `vh-orch registry list`")
            s.delete(row)

    def registry_credential(self, host: str, environment_id: int) -> RegistryCredential | None:
        """The credentials a pull from `host` in this environment uses: the environment's own, else the
        ones for every environment."""
        with self.read() as s:
            rows = list(s.exec(select(RegistryCredential).where(
                RegistryCredential.host == host,
                or_(col(RegistryCredential.environment_id) == environment_id,
                    col(RegistryCredential.environment_id).is_(None)))))
        rows.sort(key=lambda row: row.environment_id is None)
        return rows[0] if rows else None


def _same_environment(environment_id: int | None):  # type: ignore[no-untyped-def]
    column = col(RegistryCredential.environment_id)
    return column.is_(None) if environment_id is None else column == environment_id
