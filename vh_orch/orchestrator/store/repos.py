"""A project's repository access: its deploy key, HTTPS token and pinned Git host key (the secrets
encrypted by the caller with the installation's key before they get here)."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col

from vh_orch.errors import NotFound
from vh_orch.orchestrator.models import Project
from vh_orch.orchestrator.store.database import Database


class ReposStore(Database):

    def set_deploy_key(self, project_id: int, public: str, private_encrypted: str) -> None:
        """Replace the project's deploy key (a rotation: the old key stops being used at once)."""
        self._set(project_id, deploy_key_public=public, deploy_key_private=private_encrypted)

    def set_git_host_key(self, project_id: int, host_keys: str) -> None:
        """Pin these host keys (`TYPE BASE64` lines), replacing any pinned before (the operator's word)."""
        self._set(project_id, git_host_key=host_keys)

    def learn_git_host_key(self, project_id: int, host_keys: str) -> bool:
        """Pin host keys learnt on a first successful fetch, unless some were pinned meanwhile (the
        first to arrive wins, as with ssh's accept-new); True when these were pinned."""
        with self.write() as s:
            done = s.execute(update(Project).where(col(Project.id) == project_id,
                                                   col(Project.git_host_key).is_(None))
                             .values(git_host_key=host_keys))
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def _set(self, project_id: int, **values: str | None) -> None:
        with self.write() as s:
            done = s.execute(update(Project).where(col(Project.id) == project_id).values(**values))
            if not done.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"no project with id {project_id}")
