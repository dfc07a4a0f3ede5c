"""Every fetch of a project's repository goes through here: the project's deploy key or token, decrypted
for the one call, and its pinned Git host key, learnt and pinned on the first fetch that succeeds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vh_orch.storage.git_auth import GitCredentials, fingerprint, git_session

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Project
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings

log = logging.getLogger(__name__)


def has_access(project: Project) -> bool:
    """Whether fetching the project's repository takes anything of its own (a key, a token, a pin)."""
    return bool(project.deploy_key_private or project.repo_token or project.git_host_key)


def credentials_of(settings: Settings, project: Project) -> GitCredentials | None:
    """The project's repository credentials, decrypted with the installation's key (None: the daemon's own)."""
    if not has_access(project):
        return None
    from vh_orch.keyring import KeyRing

    ring = KeyRing.load(settings.home) if project.deploy_key_private or project.repo_token else None
    return GitCredentials(
        private_key=ring.decrypt(project.deploy_key_private) if ring and project.deploy_key_private else None,
        token=ring.decrypt(project.repo_token).decode() if ring and project.repo_token else None,
        host_keys=tuple((project.git_host_key or "").split("\n")) if project.git_host_key else (),
    )


@dataclass
class Fetching:
    """Git's environment for one fetch of a project's repository; afterwards, the host keys pinned by it
    (learnt on this first successful fetch) for the faces to show."""

    env: dict[str, str]
    pinned: tuple[str, ...] = ()


@contextmanager
def project_git(store: Store, settings: Settings, project: Project) -> Iterator[Fetching]:
    """The environment every Git command of one fetch of this project's repository runs with. When the
    block succeeds and no host key was pinned yet, the one the server showed is pinned from now on."""
    with git_session(credentials_of(settings, project)) as session:
        fetching = Fetching(session.env)
        yield fetching
    if session.learnt and store.learn_git_host_key(project.id, "\n".join(session.learnt)):  # type: ignore[arg-type]
        fetching.pinned = session.learnt
        log.info("project %s: pinned the Git server's host key %s", project.name,
                 ", ".join(fingerprint(key) for key in session.learnt))
