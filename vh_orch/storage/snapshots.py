"""Code snapshots: Git mirrors resolved to exact commits, and ad-hoc folders stored by content hash."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vh_orch.config.yaml_limits import MAX_YAML_BYTES
from vh_orch.errors import UserInputError
from vh_orch.storage.git_auth import base_env, explain_git_failure

# GitPython takes ~0.25 s to import, which every daemon start and CLI call would pay: it is
# imported by the functions that touch a repository.
if TYPE_CHECKING:
    import git

CONFIG_FILE = "valohai.yaml"


@dataclass(frozen=True)
class Snapshot:
    kind: str  # "git" or "adhoc"
    identifier: str  # commit sha or sha256 of the archive
    ref: str | None
    config_yaml: str
    archive_path: str | None = None
    archive_bytes: bytes | None = None  # ad-hoc: written to archive_path by save_adhoc()


def normalise_repo_url(repo: str) -> str:
    """A local folder becomes an absolute path; URLs pass through as they are."""
    if "://" in repo or repo.startswith("git@"):
        return repo
    path = Path(repo).expanduser()
    if not path.exists():
        raise UserInputError(f"repository {repo!r} is neither a URL nor an existing folder")
    return str(path.resolve())


def create_mirror(repo_url: str, mirror_path: Path, env: dict[str, str] | None = None) -> None:
    """Clone a bare mirror; the project's commits are always resolved from it."""
    import git
    if mirror_path.exists():
        raise UserInputError(f"a mirror already exists at {mirror_path}; remove it or pick another name")
    try:
        git.Repo.clone_from(repo_url, str(mirror_path), mirror=True, env=env or _git_env())
    except git.GitCommandError as exc:
        raise UserInputError(f"cannot clone {repo_url!r}: {_git_message(exc)}") from None


def init_mirror(repo_url: str, mirror_path: Path) -> None:
    """An empty mirror of repo_url, set up as `git clone --mirror` would leave it but fetching nothing yet:
    for a private repository whose deploy key is not in place yet (fetch_mirror fills it later)."""
    if mirror_path.exists():
        raise UserInputError(f"a mirror already exists at {mirror_path}; remove it or pick another name")
    git_dir = ["git", f"--git-dir={mirror_path}"]
    subprocess.run(["git", "init", "-q", "--bare", str(mirror_path)], check=True, env=_git_env(),
                   capture_output=True)
    for key, value in (("remote.origin.url", repo_url), ("remote.origin.fetch", "+refs/*:refs/*"),
                       ("remote.origin.mirror", "true")):
        subprocess.run([*git_dir, "config", key, value], check=True, env=_git_env(), capture_output=True)


def resolve_git(mirror_path: Path, ref: str | None, fetch: bool = True, env: dict[str, str] | None = None) -> Snapshot:
    """Fetch the mirror and resolve a branch, tag or sha (default: the default branch's head); env: Git's
    environment for the fetch (storage/git_auth.py), default the daemon's own."""
    import git
    repo = git.Repo(str(mirror_path))
    if fetch:
        _update(repo, env)
    wanted = ref or "HEAD"
    if wanted.startswith("-"):
        raise UserInputError(f"commit {ref!r} is not a branch, tag or sha", field="commit")
    try:
        sha = repo.git.rev_parse("--verify", "--end-of-options", f"{wanted}^{{commit}}")
    except git.GitCommandError:
        raise UserInputError(f"commit {wanted!r} is not a branch, tag or sha in the project's repository",
                             field="commit") from None
    config_yaml = read_config(repo, sha)
    if config_yaml is None:
        raise UserInputError(f"commit {sha[:12]} has no {CONFIG_FILE} at the repository root", field="commit")
    return Snapshot(kind="git", identifier=sha, ref=ref, config_yaml=config_yaml)


def read_config(repo: git.Repo, sha: str) -> str | None:
    """The commit's valohai.yaml (None when it has none); its size is checked before it is read."""
    import git
    try:
        size = int(repo.git.cat_file("-s", f"{sha}:{CONFIG_FILE}"))
    except (git.GitCommandError, ValueError):
        return None
    if size > MAX_YAML_BYTES:
        raise UserInputError(f"{CONFIG_FILE} at commit {sha[:12]} is {size:,} bytes; the limit is {MAX_YAML_BYTES:,}",
                             field="commit")
    return str(repo.git.show(f"{sha}:{CONFIG_FILE}"))


def fetch_mirror(mirror_path: Path, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Update the mirror from its origin; returns (ref, sha) of every branch or tag that moved or appeared."""
    import git
    repo = git.Repo(str(mirror_path))
    before = _refs(repo)
    _update(repo, env)
    return [(ref, sha) for ref, sha in sorted(_refs(repo).items()) if before.get(ref) != sha]


def mirror_commits(mirror_path: Path, limit: int) -> list[tuple[str, str]]:
    """(sha, committer time ISO 8601) of the mirror's commits on every ref, newest first."""
    import git
    repo = git.Repo(str(mirror_path))
    try:
        out = repo.git.log("--all", f"--max-count={limit}", "--format=%H %cI")
    except git.GitCommandError:  # an empty repository
        return []
    return [tuple(line.split(" ", 1)) for line in out.splitlines() if " " in line]  # type: ignore[misc]


def _update(repo: git.Repo, env: dict[str, str] | None) -> None:
    """Fetch every ref of the origin into the mirror; a mirror made by init_mirror learns the origin's
    default branch on its first fetch (a clone would have)."""
    import git
    env = env or _git_env()
    try:
        repo.git.remote("update", "--prune", env=env)
        if not repo.head.is_valid():  # read from the files: no process on every fetch
            _adopt_remote_head(repo, env)
    except git.GitCommandError as exc:
        raise UserInputError(f"cannot fetch the project's repository: {_git_message(exc)}") from None


def _adopt_remote_head(repo: git.Repo, env: dict[str, str]) -> None:
    out = repo.git.ls_remote("--symref", "origin", "HEAD", env=env)
    for line in out.splitlines():
        target, _, name = line.partition("\t")
        if name == "HEAD" and target.startswith("ref: refs/heads/"):
            repo.git.symbolic_ref("HEAD", target.removeprefix("ref: "))
            return


def _refs(repo: git.Repo) -> dict[str, str]:
    out = repo.git.for_each_ref("--format=%(refname:short) %(objectname)", "refs/heads", "refs/tags")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def extract_git(mirror_path: Path, sha: str, dest: Path) -> None:
    import git
    repo = git.Repo(str(mirror_path))
    buf = io.BytesIO()
    repo.archive(buf, treeish=sha, format="tar")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        tar.extractall(dest, filter="data")


def snapshot_folder(folder: Path, store_dir: Path) -> Snapshot:
    """Archive (in memory) the files Git would track in `folder`, .gitignore honoured."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise UserInputError(f"ad-hoc folder {str(folder)!r} does not exist")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise UserInputError(f"ad-hoc folder {str(folder)!r} has no {CONFIG_FILE}")
    names = _trackable_files(folder)
    data = _deterministic_tar(folder, names)
    digest = hashlib.sha256(data).hexdigest()
    return Snapshot(
        kind="adhoc",
        identifier=digest,
        ref=str(folder),
        config_yaml=config_path.read_text(errors="replace"),
        archive_path=str(store_dir / f"{digest}.tar"),
        archive_bytes=data,
    )


def save_adhoc(snapshot: Snapshot) -> None:
    """Keep an ad-hoc archive (once per content hash)."""
    assert snapshot.archive_path and snapshot.archive_bytes is not None
    archive = Path(snapshot.archive_path)
    if archive.exists():
        return
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=archive.parent, delete=False) as tmp:
        tmp.write(snapshot.archive_bytes)
    os.replace(tmp.name, archive)


def extract_adhoc(archive_path: Path, dest: Path) -> None:
    with tarfile.open(archive_path) as tar:
        tar.extractall(dest, filter="data")


def _trackable_files(folder: Path) -> list[str]:
    # A throwaway git dir over the folder lists exactly what `git add .` would take,
    # without touching the folder (or a repository it may already be).
    with tempfile.TemporaryDirectory() as git_dir:
        subprocess.run(["git", "init", "-q", "--bare", git_dir], check=True, env=_git_env())
        out = subprocess.run(
            ["git", f"--git-dir={git_dir}", f"--work-tree={folder}", "ls-files", "-z", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
            env=_git_env(),
        ).stdout
    names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n and not n.endswith("/")]
    return sorted(names)


def _deterministic_tar(folder: Path, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tar.gettarinfo(str(folder / name), arcname=name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.mode & 0o111 else 0o644
            if info.isfile():
                with open(folder / name, "rb") as fh:
                    tar.addfile(info, fh)
            elif info.issym():
                tar.addfile(info)
    return buf.getvalue()


def _git_env() -> dict[str, str]:
    return base_env()  # never waits for a password


# What Git adds after the line that says why a remote could not be read (ssh's own message).
_GIT_BOILERPLATE = ("fatal: Could not read from remote repository", "Please make sure you have the correct access",
                    "and the repository exists", "Cloning into")


def _git_message(exc: git.GitCommandError) -> str:
    stderr = (exc.stderr or "").strip().replace("stderr: ", "").strip("'").strip()
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(_GIT_BOILERPLATE)]
    return explain_git_failure(stderr) or (lines or stderr.splitlines() or [str(exc)])[-1]
