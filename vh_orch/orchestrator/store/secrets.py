"""Project secrets: names, dates and encrypted values (vh_orch/keyring.py encrypts; nothing here
ever sees a value in the clear)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row
from sqlmodel import col, select

from vh_orch.errors import NotFound
from vh_orch.orchestrator.models import Project, ProjectSecret
from vh_orch.orchestrator.store.database import Database, table_of
from vh_orch.timeutil import utcnow


class SecretsStore(Database):

    def put_secret(self, project_id: int, name: str, encrypted: str, by: str | None) -> bool:
        """Set a secret (a new one, or a new value for one of that name); True when it is new."""
        with self.write() as s:
            row = s.exec(select(ProjectSecret).where(ProjectSecret.project_id == project_id,
                                                     ProjectSecret.name == name)).first()
            created = row is None
            if row is None:
                row = ProjectSecret(project_id=project_id, name=name, value=encrypted, created_by=by)
            else:
                row.value, row.updated_at = encrypted, utcnow()
            s.add(row)
            return created

    def list_secrets(self, project_id: int) -> list[ProjectSecret]:
        """A project's secrets by name (their values still encrypted: a caller shows names and dates)."""
        with self.read() as s:
            return list(s.exec(select(ProjectSecret).where(ProjectSecret.project_id == project_id)
                               .order_by(col(ProjectSecret.name))))

    def project_with_secrets(self, project_id: int) -> tuple[Row[Any], list[Row[Any]]]:
        """What a runner needs of a project, in one read of plain rows: its name and mirror_path, and
        its secrets' names and (encrypted) values."""
        projects, secrets = table_of(Project), table_of(ProjectSecret)
        with self.read() as s:
            conn = s.connection()
            project = conn.execute(select(projects.c.name, projects.c.mirror_path)
                                   .where(projects.c.id == project_id)).one()
            return project, list(conn.execute(select(secrets.c.name, secrets.c.value)
                                              .where(secrets.c.project_id == project_id)
                                              .order_by(secrets.c.name)))

    def remove_secret(self, project_id: int, name: str) -> None:
        with self.write() as s:
            row = s.exec(select(ProjectSecret).where(ProjectSecret.project_id == project_id,
                                                     ProjectSecret.name == name)).first()
            if row is None:
                raise NotFound(f"the project has no secret named {name!r}; see `vh-orch project secret list`")
            s.delete(row)
