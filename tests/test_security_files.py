"""What vh-orch keeps on disk is its user's alone: the home 0700, the database, outputs, mirrors and
packages 0600 in 0700 folders; `vh-orch init` tightens an installation that is not."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BUSYBOX, VhOrch, installation, make_project

STEPS = f"""
- step:
    name: write
    image: {BUSYBOX}
    command:
      - cat /valohai/inputs/data/data.txt
      - umask 000; echo everyone may read this > /valohai/outputs/open.txt
    inputs:
      - name: data
"""
TREES = ("data", "repos", "adhoc")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def own(path: Path) -> bool:
    """A file of the home's own, not a link, nor a hard link to a file elsewhere (a local repository's
    objects, which a mirror of it shares: their modes are the repository's, and stay so)."""
    st = path.lstat()
    return not stat.S_ISLNK(st.st_mode) and (stat.S_ISDIR(st.st_mode) or st.st_nlink == 1)


def loose_entries(home: Path) -> list[str]:
    """Everything under the home's private trees that another user could read, write or enter."""
    found = [f"{p} {oct(mode(p))}" for p in [home, *home.glob("state.db*")] if mode(p) & 0o077]
    for tree in TREES:
        for root, dirs, files in os.walk(home / tree):
            found += [f"{Path(root) / n} {oct(mode(Path(root) / n))}" for n in dirs + files
                      if own(Path(root) / n) and mode(Path(root) / n) & 0o077]
    for root, dirs, _ in os.walk(home / "input-cache"):
        found += [f"{Path(root) / n} {oct(mode(Path(root) / n))}" for n in dirs if mode(Path(root) / n) & 0o077]
    return found


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, demo_repo_module: Path, docker_images: None) -> Iterator[VhOrch]:
    """An installation that has mirrored a repository, kept an ad-hoc package, cached an input and
    stored an output."""
    root = tmp_path_factory.mktemp("files")
    with installation(root / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        vh("project", "add", "mirrored", "--repo", str(demo_repo_module))
        vh("project", "add", "p")
        project = make_project(root, "proj", STEPS)
        data = root / "data.txt"
        data.write_text("an input\n")
        vh.start_daemon()
        execution = vh.run_json("write", "--project", "p", "--adhoc", str(project), "-i", f"data={data}")["id"]
        info = vh.wait(execution)
        assert info["status"] == "complete", info
        vh.output_uri = info["outputs"][0]["uri"]  # type: ignore[attr-defined]
        vh.stop_daemon()
        yield vh


@pytest.fixture(scope="module")
def demo_repo_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import subprocess

    repo = tmp_path_factory.mktemp("repo") / "r"
    repo.mkdir()
    (repo / "valohai.yaml").write_text(STEPS)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "r"], check=True)
    return repo


def test_what_an_installation_keeps_is_its_users_alone(ran: VhOrch) -> None:
    home = ran.home
    assert mode(home) == 0o700
    assert {p.name for p in home.glob("state.db*")} >= {"state.db"}
    assert all(mode(p) == 0o600 for p in home.glob("state.db*"))
    output = Path(ran.output_uri.removeprefix("file://"))  # type: ignore[attr-defined]
    assert output.read_text() == "everyone may read this\n"
    assert mode(output) == 0o600, "the command made it 0666; stored, it is the daemon user's"
    assert any((home / "repos").rglob("HEAD")) and any((home / "adhoc").iterdir())
    assert any((home / "input-cache").rglob("data")), "the input went through the cache"
    assert loose_entries(home) == []


def test_init_tightens_an_installation_that_is_not_private(ran: VhOrch) -> None:
    home = ran.home
    for root, dirs, files in os.walk(home):
        for name in dirs:
            os.chmod(Path(root) / name, 0o755)
        for name in files:
            path = Path(root) / name
            if own(path):
                os.chmod(path, mode(path) | 0o044)
    os.chmod(home, 0o755)
    assert len(loose_entries(home)) > 10
    said = ran("init").stderr
    assert "private to this user" in said, said
    assert loose_entries(home) == []
    assert mode(home / "executions") == 0o700
    # Cached inputs stay readable to the image's user, who sees them through a read-only mount only.
    assert all(mode(p) & 0o444 == 0o444 for p in (home / "input-cache").rglob("data"))
    assert "private to this user" not in ran("init").stderr, "nothing left to tighten"
