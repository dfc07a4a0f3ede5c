"""SSH pool hosts held by someone else: `machine list` says who, `machine release` frees a claim
whose owner is gone, and never one that is in use."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUSYBOX, SSHPool, VhOrch, eventually, make_project

STEP = f"- step:\n    name: hi\n    image: {BUSYBOX}\n    command: echo hi\n"


@pytest.fixture
def pool(vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None) -> tuple[VhOrch, Path, str]:
    """A one-host pool (the first sshd host, a fresh workdir); returns the CLI, the workdir and the host's name."""
    host = ssh_pool.hosts[0]
    workdir = tmp_path / "workdir"
    doc = {"environments": [{"name": "onprem", "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never",
                             "capacity_block": "1s",
                             "ssh": {"user": "root", "private_key_file": str(ssh_pool.client_key),
                                     "connect_timeout": "3s",
                                     "hosts": [{"address": host.address, "host_key": host.host_key,
                                                "workdir": str(workdir)}]}}]}
    (tmp_path / "pool.yaml").write_text(json.dumps(doc))
    vh("env", "apply", str(tmp_path / "pool.yaml"))
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", STEP)  # type: ignore[attr-defined]
    return vh, workdir, host.address


def hold(workdir: Path, owner: str) -> None:
    (workdir / "held").mkdir(parents=True)
    (workdir / "held" / "owner").write_text(owner + "\n")


def test_a_host_held_by_a_vanished_installation_is_shown_and_released_only_with_force(
    pool: tuple[VhOrch, Path, str],
) -> None:
    vh, workdir, address = pool
    hold(workdir, "vh-0123456789abcdef 7 gpu")
    vh.start_daemon()
    created = vh.run_json("hi", "--project", "p", "--adhoc", str(vh.project_dir), "--env", "onprem")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while "installation vh-0123456789abcdef (machine 7, environment gpu)" not in (listed := vh("machine", "list").stdout):
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    refused = vh("machine", "release", address, check=False)
    assert refused.returncode == 1
    assert "held by installation vh-0123456789abcdef" in refused.stderr and "--force" in refused.stderr
    assert (workdir / "held" / "owner").exists(), "a refusal changes nothing"
    released = vh("machine", "release", address, "--force")
    assert f"released host {address}:22 (onprem)" in released.stdout
    info = vh.wait(created["id"], timeout=90)
    assert info["status"] == "complete", info


def test_a_claim_whose_installation_still_runs_containers_there_is_not_released(
    pool: tuple[VhOrch, Path, str],
) -> None:
    vh, workdir, address = pool
    other = "vh-fedcba9876543210"
    hold(workdir, f"{other} 3 gpu")
    name = f"{other}-exec-1"
    subprocess.run(["docker", "run", "-d", "--pull", "never", "--name", name, "--label", f"vh-orch.cluster={other}",
                    BUSYBOX, "sleep", "60"], check=True, capture_output=True)
    try:
        refused = vh("machine", "release", address, "--force", check=False)
        assert refused.returncode == 1 and name in refused.stderr and "still run" in refused.stderr
        assert (workdir / "held" / "owner").exists()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_this_installations_claim_is_released_when_its_machine_is_gone_never_while_it_is_live(
    pool: tuple[VhOrch, Path, str],
) -> None:
    vh, workdir, address = pool
    hold(workdir, f"{vh.cluster_id()} 999 onprem")  # a machine row this database does not have
    released = vh("machine", "release", address)
    assert "machine 999 of this installation is gone" in released.stdout
    assert not (workdir / "held").exists()
    assert "is not held by anyone" in vh("machine", "release", address).stdout

    vh.start_daemon()
    created = vh.run_json("hi", "--project", "p", "--adhoc", str(vh.project_dir), "--env", "onprem")  # type: ignore[attr-defined]
    assert vh.wait(created["id"], timeout=90)["status"] == "complete"
    eventually("the machine to be ready again", lambda: [m["state"] for m in vh.json("machine", "list")
                                                               if m["environment"] == "onprem"] == ["ready"])
    refused = vh("machine", "release", address, "--force", check=False)
    assert refused.returncode == 1 and "of this installation, which is ready" in refused.stderr
    assert (workdir / "held" / "owner").exists()


def test_an_unknown_host_is_refused_by_name(pool: tuple[VhOrch, Path, str]) -> None:
    vh, _, _ = pool
    refused = vh("machine", "release", "10.9.9.9", check=False)
    assert refused.returncode == 1 and "no SSH pool environment has a host '10.9.9.9'" in refused.stderr
