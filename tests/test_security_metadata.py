"""Containers on a cloud VM never reach the instance metadata service: the first-boot setup (cloud-init on
AWS, the startup script on GCP) adds a REJECT rule for 169.254.169.254 to Docker's DOCKER-USER chain, and a
systemd drop-in adds it again whenever dockerd starts. (AWS's IMDSv2 with one hop: tests/test_aws.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import PYTHON_IMAGE
from vh_orch.bootstrap.docker_host import BLOCK_METADATA, METADATA_DROPIN, METADATA_DROPIN_PATH
from vh_orch.cloud_drivers.vm import cloud_config, generate_host_key, startup_script

RULE = "-A DOCKER-USER -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable"
LOGIN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileButHarmless vh-orch"


def dropin_command() -> str:
    """What the drop-in runs at each dockerd start: its `ExecStartPost=/bin/sh -c '...'` command."""
    (line,) = [line for line in METADATA_DROPIN.splitlines() if line.startswith("ExecStartPost=")]
    prefix = "ExecStartPost=/bin/sh -c '"
    assert line.startswith(prefix) and line.endswith("'")
    return line[len(prefix):-1]


def test_cloud_init_writes_the_dropin_and_adds_the_rule_once_docker_runs() -> None:
    private, public = generate_host_key()
    config = yaml.safe_load(cloud_config("ubuntu", LOGIN, private, public, "/var/lib/vh-orch"))
    assert {"path": METADATA_DROPIN_PATH, "permissions": "0644", "content": METADATA_DROPIN} in config["write_files"]
    commands = config["runcmd"]
    assert commands.index(["sh", "-c", BLOCK_METADATA]) > commands.index(["systemctl", "enable", "--now", "docker"])
    assert dropin_command() == BLOCK_METADATA


def test_the_startup_script_adds_the_rule_at_first_boot_and_at_every_boot_after(tmp_path: Path,
                                                                                docker_images: None) -> None:
    """Run it twice (a first boot, a reboot) in a Debian container, iptables a stub that logs its calls."""
    private, public = generate_host_key()
    script = startup_script("vh", LOGIN, private, public, "/var/lib/vh-orch")
    assert subprocess.run(["sh", "-n"], input=script, text=True, timeout=30).returncode == 0
    (tmp_path / "startup.sh").write_text(script)
    check = ("mkdir -p /stub && for c in systemctl service docker curl apt-get; do "
             "printf '#!/bin/sh\\nexit 0\\n' > /stub/$c; chmod +x /stub/$c; done; "
             "printf '#!/bin/sh\\necho \"$*\" >> /tmp/iptables.log\\n[ \"$1\" != -C ]\\n' > /stub/iptables; "
             "chmod +x /stub/iptables; "
             "PATH=/stub:$PATH sh /in/startup.sh && echo BOOT >> /tmp/iptables.log && "
             "PATH=/stub:$PATH sh /in/startup.sh && cat /tmp/iptables.log && echo DROPIN && "
             f"cat {METADATA_DROPIN_PATH}")
    result = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none",
                             "-v", f"{tmp_path}:/in:ro", PYTHON_IMAGE, "sh", "-c", check],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    calls, _, dropin = result.stdout.partition("DROPIN\n")
    rule = "DOCKER-USER -d 169.254.169.254/32 -j REJECT"
    once = ["-N DOCKER-USER", f"-C {rule}", f"-I {rule}"]
    # First boot: once before Docker is installed (its chain made ahead of it), once after it started;
    # a reboot: once, before the script's first-boot part is skipped.
    assert calls.splitlines() == [*once, *once, "BOOT", *once]
    assert dropin == METADATA_DROPIN


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("iptables"),
                    reason="needs root, unshare and iptables to make a throwaway network namespace")
@pytest.mark.parametrize("command", [BLOCK_METADATA, dropin_command()], ids=["bootstrap", "dropin"])
def test_the_rule_is_added_once_however_often_it_runs(command: str) -> None:
    """For real, in a network namespace of its own (its tables vanish with it): with no DOCKER-USER chain
    yet, and again with the rule there."""
    result = subprocess.run(["unshare", "--net", "sh", "-ec", f"{command}; {command}; iptables -S DOCKER-USER"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["-N DOCKER-USER", RULE]
