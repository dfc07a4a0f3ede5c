"""Bootstrap a machine over SSH, in named steps: waiting for SSH → (waiting for
the first-boot setup, on a new cloud VM) → checking Docker → installing Docker → ready.

Idempotent: a marker with the bootstrap version in the machine's workdir means an
unchanged machine is not set up twice. Every step has a deadline.

GPU environments also need the NVIDIA container runtime; GPU_SETUP is the script for
Debian/Ubuntu (written and documented, not exercised by the tests: no GPU here).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

from vh_orch.bootstrap.ssh import HostKeyMismatch, SSHError, SSHTransport

BOOTSTRAP_VERSION = "1"
DEFAULT_INSTALL = ("if command -v apt-get >/dev/null; then export DEBIAN_FRONTEND=noninteractive; "
                   "apt-get update -qq && apt-get install -y -qq docker.io; "
                   "else echo 'no apt-get: set ssh.install_docker_command' >&2; exit 1; fi; "
                   "(systemctl enable --now docker 2>/dev/null || service docker start 2>/dev/null || true)")
GPU_SETUP = ("distribution=$(. /etc/os-release; echo $ID$VERSION_ID) && "
             "apt-get install -y -qq nvidia-container-toolkit && "
             "nvidia-ctk runtime configure --runtime=docker && systemctl restart docker")

# A new cloud VM sets itself up at first boot (cloud-init user-data on AWS, a startup
# script on GCP; see cloud_drivers/vm.py), then writes FIRST_BOOT_DONE.
FIRST_BOOT_DONE = "/var/lib/vh-orch-first-boot-done"
FIRST_BOOT_WAIT = ("if command -v cloud-init >/dev/null; then cloud-init status --wait >/dev/null || true; fi; "
                   "if command -v google_metadata_script_runner >/dev/null; then "
                   f"while [ ! -f {FIRST_BOOT_DONE} ]; do sleep 2; done; fi; true")

# Containers must never reach a cloud VM's instance metadata service (its credentials, its startup
# script with our host key): a rule in DOCKER-USER, the chain Docker leaves to its operator and
# jumps to for every container's forwarded packet (the host's own requests never pass it). It is
# added after Docker starts, by a systemd drop-in whenever dockerd (re)starts (a reboot empties
# the tables), and again at each bootstrap check. REJECT, not DROP: a client that probes the
# service fails at once instead of waiting out its timeouts.
METADATA_ADDRESS = "169.254.169.254/32"
METADATA_RULE = f"DOCKER-USER -d {METADATA_ADDRESS} -j REJECT"
# Idempotent, and safe under `set -e`. Docker keeps a DOCKER-USER chain it finds (and jumps to it).
BLOCK_METADATA = (f"iptables -N DOCKER-USER 2>/dev/null || true; iptables -C {METADATA_RULE} 2>/dev/null || "
                  f"iptables -I {METADATA_RULE}")
METADATA_DROPIN_PATH = "/etc/systemd/system/docker.service.d/vh-orch-metadata.conf"
METADATA_DROPIN = f"[Service]\nExecStartPost=/bin/sh -c '{BLOCK_METADATA}'\n"

Step = Callable[[str], None]


class BootstrapError(Exception):
    """Bootstrap failed or missed a deadline; the message is the machine's reason."""


def _sudo(user: str, command: str) -> str:
    return command if user == "root" else f"sudo -n sh -c {shlex.quote(command)}"


def bootstrap(
    transport: SSHTransport,
    workdir: str,
    on_step: Step,
    deadline_s: float = 1200.0,
    install_command: str | None = None,
    gpu: bool = False,
    first_boot: bool = False,
) -> None:
    """Make sure Docker answers on the machine; raises HostKeyMismatch or BootstrapError.

    first_boot: a new cloud VM, whose first-boot setup may still be installing Docker and
    our host key; wait for it to finish before looking (and never race it for the
    package manager). Its containers are kept from the instance metadata service (BLOCK_METADATA),
    at every bootstrap: a machine where that fails is never used."""
    end = time.monotonic() + deadline_s
    user = transport.target.user
    marker = shlex.quote(f"{workdir}/bootstrap-version")

    on_step("waiting for SSH")
    last: Exception | None = None
    while True:
        try:
            transport.run("true", timeout=30)
            break
        except HostKeyMismatch as exc:
            # A new VM may show the key its image made until its first-boot script installs
            # ours; nothing is sent to it meanwhile (the key is checked before we log in).
            if not first_boot or time.monotonic() > end:
                raise
            last = exc
            time.sleep(2)
        except SSHError as exc:
            last = exc
            if time.monotonic() > end:
                raise BootstrapError(f"SSH did not answer within {deadline_s:g} s: {last}") from None
            time.sleep(2)

    if first_boot:
        on_step("waiting for the first-boot setup")
        result = transport.run(FIRST_BOOT_WAIT, timeout=max(1.0, end - time.monotonic()))
        if result.code != 0:
            raise BootstrapError("the first-boot setup (cloud-init or startup script) did not finish")

    on_step("checking Docker")
    check = transport.run(f"cat {marker} 2>/dev/null; echo; {_sudo(user, 'docker info --format {{.ServerVersion}}')}",
                          timeout=60)
    lines = check.stdout.splitlines()
    if check.code == 0 and lines and lines[0].strip() == BOOTSTRAP_VERSION:
        if first_boot:
            _block_metadata(transport, user)
        on_step("ready")
        return
    if transport.run("command -v docker", timeout=30).code != 0:
        on_step("installing Docker")
        result = transport.run(_sudo(user, install_command or DEFAULT_INSTALL),
                               timeout=max(1.0, end - time.monotonic()))
        if result.code != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BootstrapError(f"installing Docker failed (exit {result.code}): {tail[0]}")
    if gpu:
        on_step("installing the NVIDIA container runtime")
        result = transport.run(_sudo(user, GPU_SETUP), timeout=max(1.0, end - time.monotonic()))
        if result.code != 0:
            raise BootstrapError(f"installing the NVIDIA container runtime failed (exit {result.code})")

    on_step("waiting for Docker")
    while transport.run(_sudo(user, "docker info >/dev/null 2>&1"), timeout=60).code != 0:
        if time.monotonic() > end:
            raise BootstrapError(f"Docker did not answer within {deadline_s:g} s")
        time.sleep(2)
    if first_boot:
        _block_metadata(transport, user)
    transport.run(f"mkdir -p {shlex.quote(workdir)} && echo {BOOTSTRAP_VERSION} > {marker}", timeout=30)
    on_step("ready")


def _block_metadata(transport: SSHTransport, user: str) -> None:
    result = transport.run(_sudo(user, BLOCK_METADATA), timeout=60)
    if result.code != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BootstrapError(f"could not keep containers from the instance metadata service (iptables, "
                             f"exit {result.code}): {tail[0]}")
