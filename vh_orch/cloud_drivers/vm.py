"""What the AWS and GCP drivers share: reaching a new VM over SSH, safely.

Every machine gets a host key pair generated here at launch. The private half goes
into the machine's first-boot configuration (cloud-init puts it in place before sshd
starts); the public half is written on the instance as a tag or label, so it is pinned
from the first connection on, also for an instance adopted after a crash. The
machine's address is its public IP, its private IP (`ssh.address: private`), or
whatever an operator's `ssh.endpoint_resolver` returns (bastions, VPNs, tests).
"""

from __future__ import annotations

import importlib
import re
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vh_orch.bootstrap.docker_host import BLOCK_METADATA, FIRST_BOOT_DONE, METADATA_DROPIN, METADATA_DROPIN_PATH
from vh_orch.bootstrap.ssh import SSHTarget
from vh_orch.cloud_drivers.base import MachineRef
from vh_orch.cloud_drivers.settings import SSHSection
from vh_orch.errors import CloudError, ConfigError

TAG_HOST_KEY = "vh-orch-host-key"
RESOLVER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

Resolver = Callable[[dict[str, Any]], dict[str, Any]]


def generate_host_key() -> tuple[str, str]:
    """A fresh ed25519 host key: (private key in OpenSSH PEM form, public key 'ssh-ed25519 BASE64')."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def public_key_of(private_key_file: str) -> str:
    """The 'TYPE BASE64' public key of vh-orch's SSH key (from KEY.pub, or derived from KEY)."""
    pub = Path(f"{private_key_file}.pub")
    if pub.is_file():
        return " ".join(pub.read_text().split()[:2])
    import paramiko

    try:
        key = paramiko.PKey.from_path(private_key_file)
    except Exception as exc:
        raise ConfigError(f"ssh.private_key_file {private_key_file}: cannot read the key: {exc}") from None
    return f"{key.get_name()} {key.get_base64()}"


def cloud_config(user: str, authorized_key: str, host_private: str, host_public: str, workdir: str) -> str:
    """cloud-init user-data: the host key, vh-orch's login key, Docker and curl, the workdir; containers
    kept from the instance metadata service (docker_host.BLOCK_METADATA, then at every dockerd start)."""
    config: dict[str, Any] = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
        "groups": ["docker"],
        # Written before the packages are installed: the Docker they start already has it.
        "write_files": [{"path": METADATA_DROPIN_PATH, "permissions": "0644", "content": METADATA_DROPIN}],
        "package_update": True,
        "packages": ["docker.io", "curl"],
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "docker"],
            ["sh", "-c", BLOCK_METADATA],
            ["mkdir", "-p", workdir],
            ["chown", user, workdir],
            ["touch", FIRST_BOOT_DONE],
        ],
    }
    if user == "root":
        config.update(disable_root=False, ssh_authorized_keys=[authorized_key])
    else:
        config["users"] = [{"name": user, "groups": ["docker"], "sudo": "ALL=(ALL) NOPASSWD:ALL",
                            "shell": "/bin/bash", "ssh_authorized_keys": [authorized_key]}]
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def startup_script(user: str, authorized_key: str, host_private: str, host_public: str, workdir: str) -> str:
    """The same first-boot setup as cloud_config, as a shell script (GCE images run it at every
    boot through the guest agent, with or without cloud-init); every value is quoted. At every
    boot it first keeps containers from the instance metadata service."""
    q = shlex.quote
    home = "/root" if user == "root" else f"/home/{user}"
    lines = [
        "#!/bin/sh",
        "set -e",
        f"if command -v iptables >/dev/null; then {BLOCK_METADATA}; fi",
        f"if [ -f {q(FIRST_BOOT_DONE)} ]; then exit 0; fi",
        f"mkdir -p {q(METADATA_DROPIN_PATH.rsplit('/', 1)[0])}",
        f"printf '%s' {q(METADATA_DROPIN)} > {q(METADATA_DROPIN_PATH)}",
        "systemctl daemon-reload",
        "mkdir -p /etc/ssh",
        f"printf '%s\\n' {q(host_private.strip())} > /etc/ssh/ssh_host_ed25519_key",
        f"printf '%s\\n' {q(host_public)} > /etc/ssh/ssh_host_ed25519_key.pub",
        "chmod 600 /etc/ssh/ssh_host_ed25519_key",
        "rm -f /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key*",
        "systemctl restart ssh 2>/dev/null || systemctl restart sshd 2>/dev/null || service ssh restart",
        "groupadd -f docker",
    ]
    if user != "root":
        lines += [
            f"id -u {q(user)} >/dev/null 2>&1 || useradd -m -s /bin/bash {q(user)}",
            f"usermod -aG docker {q(user)}",
            "mkdir -p /etc/sudoers.d",
            f"printf '%s\\n' {q(f'{user} ALL=(ALL) NOPASSWD:ALL')} > /etc/sudoers.d/vh-orch",
            "chmod 440 /etc/sudoers.d/vh-orch",
        ]
    lines += [
        f"install -d -m 700 -o {q(user)} {q(home + '/.ssh')}",
        f"grep -qxF {q(authorized_key)} {q(home + '/.ssh/authorized_keys')} 2>/dev/null || "
        f"printf '%s\\n' {q(authorized_key)} >> {q(home + '/.ssh/authorized_keys')}",
        f"chown {q(user)} {q(home + '/.ssh/authorized_keys')}",
        "export DEBIAN_FRONTEND=noninteractive",
        "command -v docker >/dev/null && command -v curl >/dev/null || "
        "{ apt-get update -qq && apt-get install -y -qq docker.io curl; }",
        "systemctl enable --now docker",
        BLOCK_METADATA,
        f"mkdir -p {q(workdir)} && chown {q(user)} {q(workdir)}",
        f"touch {q(FIRST_BOOT_DONE)}",
    ]
    return "\n".join(lines) + "\n"


def load_resolver(spec: str) -> Resolver:
    """Import `module:function`; a ConfigError says plainly what is wrong."""
    if not isinstance(spec, str) or not RESOLVER_RE.match(spec):
        raise ConfigError(f"ssh.endpoint_resolver: {spec!r} is not of the form 'module:function'")
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"ssh.endpoint_resolver: cannot import {module_name!r}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"ssh.endpoint_resolver: {module_name!r} has no function {name!r}")
    return function  # type: ignore[no-any-return]


@dataclass(frozen=True)
class VMInfo:
    """What an endpoint resolver is given about an instance."""

    instance_id: str
    private_ip: str | None
    public_ip: str | None
    zone: str | None
    tags: dict[str, str]
    host_key: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "private_ip": self.private_ip, "public_ip": self.public_ip,
                "zone": self.zone, "tags": dict(self.tags)}


class VMAccess:
    """How vh-orch logs in to the VMs of one environment (its `ssh:` section)."""

    def __init__(self, ssh: SSHSection, default_user: str) -> None:
        self.user = ssh.user or default_user
        self.key_file = ssh.private_key_file
        self.port = ssh.port
        self.address = ssh.address
        self.connect_timeout_s = ssh.connect_timeout
        self.workdir = ssh.workdir
        self.resolver = load_resolver(ssh.endpoint_resolver) if ssh.endpoint_resolver else None

    def user_data(self, host_private: str, host_public: str) -> str:
        return cloud_config(self.user, public_key_of(self.key_file), host_private, host_public, self.workdir)

    def target(self, vm: VMInfo) -> SSHTarget:
        host, port, host_key = None, self.port, vm.host_key
        if self.resolver is not None:
            found = self.resolver(vm.as_dict())
            if not isinstance(found, dict) or not isinstance(found.get("host"), str):
                raise ConfigError(f"ssh.endpoint_resolver returned {found!r}; expected {{'host', 'port', "
                                  "'host_key'?}")
            host, port = found["host"], int(found.get("port", self.port))
            host_key = found.get("host_key") or host_key
        else:
            host = vm.private_ip if self.address == "private" else vm.public_ip
        if not host:
            raise ConfigError(f"instance {vm.instance_id} has no {self.address} address yet")
        if not host_key:
            raise ConfigError(f"instance {vm.instance_id} has no pinned host key (tag {TAG_HOST_KEY} missing); "
                              "it cannot be trusted")
        return SSHTarget(host, port, self.user, self.key_file, host_key, self.connect_timeout_s)


class VMMachines:
    """Reaching the VMs of one environment, for the aws and gcp drivers: vh-orch's login
    (VMAccess) and what the cloud last said of each instance (addresses, host key), asked
    again when unknown (an instance launched before this daemon started)."""

    def __init__(self, access: VMAccess) -> None:
        self.access = access
        self._seen: dict[str, VMInfo] = {}
        self._seen_lock = threading.Lock()

    def target(self, machine: MachineRef) -> SSHTarget:
        return self.access.target(self._info(machine.instance_id or ""))

    def workdir(self, machine: MachineRef) -> str:
        return self.access.workdir

    def _remember(self, info: VMInfo, gone: bool = False) -> str | None:
        """Note what the cloud says of an instance; returns the address vh-orch reaches it at."""
        with self._seen_lock:
            if gone:
                self._seen.pop(info.instance_id, None)
            else:
                self._seen[info.instance_id] = info
        return info.private_ip if self.access.address == "private" else info.public_ip

    def _keep_only(self, instance_ids: set[str]) -> None:
        """Forget instances a complete listing no longer shows."""
        with self._seen_lock:
            self._seen = {k: v for k, v in self._seen.items() if k in instance_ids}

    def _look_up(self, instance_id: str) -> None:
        """Ask the cloud about one instance and _remember it (CloudError if that fails)."""
        raise NotImplementedError

    def _info(self, instance_id: str) -> VMInfo:
        with self._seen_lock:
            info = self._seen.get(instance_id)
        if info is None:
            self._look_up(instance_id)
            with self._seen_lock:
                info = self._seen.get(instance_id)
        if info is None:
            raise CloudError(f"instance {instance_id} is gone")
        return info
