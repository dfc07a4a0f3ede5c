"""Private repositories: a project with a deploy key of its own (its public half shown to paste into the
Git host, its private half encrypted with the installation's key), or an HTTPS token; the Git server's
host key pinned. The CLI (`project add --deploy-key generate`, `project fetch`, `project key`) and the
API both come here."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from vh_orch.errors import UserInputError, about
from vh_orch.orchestrator.repo_access import project_git
from vh_orch.services.projects import ProjectView, check_new_project, project_view
from vh_orch.storage.git_auth import GitCredentials, fingerprint, generate_deploy_key, git_session, parse_host_keys

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Project
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings

_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:")
_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$")


@dataclass(frozen=True)
class RepoAccess:
    """What may be shown of a project's repository access: never a private key or a token."""

    project: str
    repo_url: str | None
    deploy_key: str | None  # the public half, an OpenSSH line
    host_keys: tuple[str, ...]  # pinned, `TYPE BASE64` each
    has_token: bool

    @property
    def host_key_fingerprints(self) -> tuple[str, ...]:
        return tuple(fingerprint(key) for key in self.host_keys)


@dataclass(frozen=True)
class PrivateProjectAdded:
    project: ProjectView
    access: RepoAccess
    fetch_error: str | None  # the first fetch failed (a deploy key not installed yet): the project is kept
    learnt: bool  # the host key was learnt on this first fetch (not given)


@dataclass(frozen=True)
class Fetched:
    moved: list[tuple[str, str]]  # (ref, sha) of every branch or tag that moved or appeared
    pinned: tuple[str, ...]  # host keys learnt and pinned by this fetch


def repo_access(project: Project) -> RepoAccess:
    return RepoAccess(project=project.name, repo_url=project.repo_url, deploy_key=project.deploy_key_public,
                      host_keys=tuple(filter(None, (project.git_host_key or "").split("\n"))),
                      has_token=project.repo_token is not None)


def add_private_project(store: Store, settings: Settings, name: str, *, repo: str, owner: str | None = None,
                        deploy_key: bool = False, git_host_key: str | None = None,
                        token: str | None = None) -> PrivateProjectAdded:
    """A project whose repository takes a deploy key made here (deploy_key), a token, or a pinned host key.

    With a new deploy key the first fetch cannot succeed until the key is installed on the Git host: the
    project is recorded all the same, with an empty mirror that `project fetch` fills. With a token, a
    failed first fetch refuses the project (the token or URL is wrong). Raises UserInputError naming
    `name`, `owner`, `repo`, `git_host_key` or `repo_token`."""
    from vh_orch.keyring import KeyRing
    from vh_orch.storage.snapshots import init_mirror, normalise_repo_url

    owner_id = check_new_project(store, name, owner)
    ring = KeyRing.load(settings.home)  # before anything is made: no key, no private project
    with about("git_host_key"):
        host_keys = parse_host_keys(git_host_key, "--git-host-key") if git_host_key is not None else ()
    with about("repo"):
        repo_url = normalise_repo_url(repo)
        _check_scheme(repo_url, deploy_key, token)
    public, private = generate_deploy_key(f"vh-orch-{name}") if deploy_key else (None, None)
    mirror_path = settings.repos_dir / f"{name}.git"
    with about("repo"):
        init_mirror(repo_url, mirror_path)
    fetch_error, learnt = _first_fetch(mirror_path, GitCredentials(private, token, host_keys), keep=deploy_key)
    access = {"deploy_key_public": public, "deploy_key_private": ring.encrypt(private) if private else None,
              "repo_token": ring.encrypt(token) if token is not None else None,
              "git_host_key": "\n".join(host_keys or learnt) or None}
    with about("name"):
        project = store.create_project(name, repo_url, str(mirror_path), owner_id=owner_id, access=access)
    return PrivateProjectAdded(project=project_view(project, store.project_people()), access=repo_access(project),
                               fetch_error=fetch_error, learnt=bool(learnt) and not host_keys)


def _check_scheme(repo_url: str, deploy_key: bool, token: str | None) -> None:
    ssh = repo_url.startswith("ssh://") or bool(_SCP_LIKE.match(repo_url))
    if deploy_key and not ssh:
        raise UserInputError(f"a deploy key is for an SSH repository (ssh://HOST/PATH or git@HOST:PATH), not "
                             f"{repo_url!r}; an HTTPS one takes --repo-token-stdin")
    if token is None:
        return
    if token == "" or "\n" in token or "\r" in token:
        raise UserInputError("the token is empty or more than one line", field="repo_token")
    url = urlparse(repo_url)
    # A token crosses the network only encrypted (plain HTTP to this machine itself is no crossing).
    if not (url.scheme == "https" or (url.scheme == "http" and _LOOPBACK.match(url.hostname or ""))):
        raise UserInputError(f"a token is for an HTTPS repository (https://HOST/PATH), not {repo_url!r}",
                             field="repo_token")
    if url.username or url.password:
        raise UserInputError("give the token with --repo-token-stdin, not inside the URL", field="repo")


def _first_fetch(mirror_path: Path, credentials: GitCredentials, keep: bool) -> tuple[str | None, tuple[str, ...]]:
    """(why the first fetch failed, or None; the host keys it learnt). A failure removes the mirror and
    raises unless keep."""
    from vh_orch.storage.snapshots import fetch_mirror

    try:
        with git_session(credentials) as session:
            fetch_mirror(mirror_path, env=session.env)
    except UserInputError as exc:
        if not keep:
            shutil.rmtree(mirror_path, ignore_errors=True)
            exc.field = exc.field or "repo"
            raise
        return str(exc), ()
    return None, session.learnt


def fetch_project(store: Store, settings: Settings, name: str, git_host_key: str | None = None) -> Fetched:
    """Fetch the project's repository into its mirror (with its deploy key or token); git_host_key pins
    a new host key first (the operator's word that the server's key really changed)."""
    from vh_orch.storage.snapshots import fetch_mirror

    project = store.get_project(name)
    if not project.mirror_path:
        raise UserInputError(f"project {name!r} has no repository (ad-hoc runs only)")
    if git_host_key is not None:
        with about("git_host_key"):
            keys = parse_host_keys(git_host_key, "--git-host-key")
        store.set_git_host_key(project.id, "\n".join(keys))  # type: ignore[arg-type]
        project = store.get_project(name)
    with project_git(store, settings, project) as fetching:
        moved = fetch_mirror(Path(project.mirror_path), env=fetching.env)  # type: ignore[arg-type]
    return Fetched(moved=moved, pinned=fetching.pinned)


def rotate_deploy_key(store: Store, settings: Settings, name: str) -> RepoAccess:
    """A new deploy key for the project (also for one that had none): the old one is no longer used, so
    install the new public key on the Git host (and remove the old one there)."""
    from vh_orch.keyring import KeyRing

    project = store.get_project(name)
    if not project.repo_url or not (project.repo_url.startswith("ssh://") or _SCP_LIKE.match(project.repo_url)):
        raise UserInputError(f"project {name!r} has no SSH repository: a deploy key is for one "
                             "(ssh://HOST/PATH or git@HOST:PATH)")
    public, private = generate_deploy_key(f"vh-orch-{name}")
    store.set_deploy_key(project.id, public, KeyRing.load(settings.home).encrypt(private))  # type: ignore[arg-type]
    return repo_access(store.get_project(name))
