"""Fake VMs for tests: root sshd processes on their own loopback addresses (127.0.0.N:22).

Each has its own host key; all share this machine's Docker engine. Key-only auth.
"""

from __future__ import annotations

import fcntl
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at path (and path.pub); returns the public key as 'TYPE BASE64'."""
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    kind, b64, *_ = (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().split()
    return f"{kind} {b64}"


@dataclass
class SSHHost:
    address: str
    port: int
    folder: Path
    host_key: str
    process: subprocess.Popen[bytes] | None = None

    def start(self, authorized_key: str, sftp: bool = True, extra_config: str = "") -> None:
        """Start sshd; sftp=False leaves out the SFTP subsystem (vh-orch must not need it);
        extra_config is appended to sshd_config (e.g. `SetEnv DOCKER_HOST=...`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        (self.folder / "authorized_keys").write_text(authorized_key + "\n")
        config = self.folder / "sshd_config"
        # sshd runs each command with root's bash, which would source this machine's ~/.bashrc (here:
        # `pyenv init`, some 35 processes and ~0.15 s for every command vh-orch sends). A bash whose
        # SHLVL is already 1 skips it; sshd takes only its first SetEnv line, so the test's own go there.
        setenv = ["SHLVL=1"]
        other = []
        for line in extra_config.splitlines():
            if line.startswith("SetEnv "):
                setenv += line.split()[1:]
            else:
                other.append(line + "\n")
        extra_config = f"SetEnv {' '.join(setenv)}\n" + "".join(other)
        config.write_text(
            f"ListenAddress {self.address}:{self.port}\n"
            f"HostKey {self.folder / 'host_key'}\n"
            f"PidFile {self.folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nUseDNS no\nMaxSessions 100\nMaxStartups 100:30:200\n"
            + ("Subsystem sftp internal-sftp\n" if sftp else "")
            + "LogLevel ERROR\n" + extra_config
        )
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=open(self.folder / "sshd.log", "ab"))
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"sshd on {self.address} did not start: "
                                         f"{(self.folder / 'sshd.log').read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def kill_sessions(self) -> None:
        """Cut every open connection (the per-connection sshd children), keeping the listener."""
        if self.process is not None:
            subprocess.run(["pkill", "-KILL", "-P", str(self.process.pid)], capture_output=True)


def make_host(root: Path, n: int, net: int = 0) -> SSHHost:
    """A host on 127.0.NET.N:22 (its own folder and host key), not started yet."""
    folder = root / f"host{n}"
    folder.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / "host_key", f"host{n}")
    return SSHHost(address=f"127.0.{net}.{n}", port=22, folder=folder, host_key=host_key)


@contextmanager
def free_net(first: int = 100, last: int = 199) -> Iterator[int]:
    """A loopback /24 (127.0.NET.0) no other test process on this machine uses while this one
    holds it: each pytest worker, and each pytest run beside it, starts its sshd hosts in a net of
    its own, so none waits for another's."""
    for net in range(first, last + 1):
        lock = open(f"/tmp/vh-orch-tests-net-{net}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        try:
            yield net
        finally:
            lock.close()
        return
    raise AssertionError(f"every loopback net 127.0.{first}-{last}.0 is held by another test process")
