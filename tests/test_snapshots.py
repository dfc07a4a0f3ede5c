"""Commits: Git refs resolved to exact shas, ad-hoc folders stored once by content hash."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from vh_orch.errors import UserInputError
from vh_orch.storage.snapshots import create_mirror, resolve_git, save_adhoc, snapshot_folder

YAML = "- step:\n    name: s\n    image: busybox\n    command: echo {parameters}\n"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_adhoc_snapshot_honours_gitignore_and_is_stored_once(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    (folder / "sub").mkdir(parents=True)
    (folder / "valohai.yaml").write_text(YAML)
    (folder / "train.py").write_text("print(1)\n")
    (folder / "sub" / "keep.txt").write_text("keep\n")
    (folder / ".gitignore").write_text("*.ckpt\nbig/\n")
    (folder / "model.ckpt").write_text("huge")
    (folder / "big").mkdir()
    (folder / "big" / "data.bin").write_text("huge")
    store = tmp_path / "adhoc"

    first = snapshot_folder(folder, store)
    save_adhoc(first)
    with tarfile.open(first.archive_path) as tar:  # type: ignore[arg-type]
        assert sorted(tar.getnames()) == [".gitignore", "sub/keep.txt", "train.py", "valohai.yaml"]
    (folder / "model.ckpt").write_text("changed, but ignored")
    second = snapshot_folder(folder, store)
    save_adhoc(second)
    assert second.identifier == first.identifier
    assert len(list(store.iterdir())) == 1
    (folder / "train.py").write_text("print(2)\n")
    assert snapshot_folder(folder, store).identifier != first.identifier


def test_adhoc_folder_without_valohai_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="has no valohai.yaml"):
        snapshot_folder(tmp_path, tmp_path / "adhoc")


def test_git_refs_resolve_to_exact_commits_and_fetch_fresh(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "valohai.yaml").write_text(YAML)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    mirror = tmp_path / "mirror.git"
    create_mirror(str(repo), mirror)

    (repo / "valohai.yaml").write_text(YAML.replace("echo", "printf"))
    git(repo, "commit", "-qam", "two")
    second = git(repo, "rev-parse", "HEAD")

    head = resolve_git(mirror, None)
    assert head.identifier == second and "printf" in head.config_yaml
    assert resolve_git(mirror, "v1").identifier == first
    assert resolve_git(mirror, first[:10]).identifier == first
    assert resolve_git(mirror, "main").identifier == second
    for bad in ("nope", "--output=/tmp/x", "main~10"):
        with pytest.raises(UserInputError, match="is not a branch, tag or sha"):
            resolve_git(mirror, bad)
