"""Bulk bytes to an SSH host through the OpenSSH client (`ssh`), pinned as the paramiko transport is.

A large input file goes to the machine on a connection of its own, made by the OpenSSH client
where this host has one: the file is the client's stdin, so no byte of it passes through the
daemon (its memory stays flat, and no Python thread, GIL or 32 KiB packet loop paces the
transfer). On the machine it is `cat` into the part file the input cache's script named
(input_cache.TAKE_SCRIPT); that script, which asked for the bytes under the entry's lock and
waits meanwhile, then checks their size and sha256 before anything is kept (input_cache.py).

Chosen by measurement, 500 MB from a file on a 2-core machine with other work beside it, sshd
on loopback, medians of 5 or 6 interleaved runs:
- the transfer alone: `cat FILE | ssh host 'cat > f'` 5.3 s; the OpenSSH client with the file as
  its stdin 4.4 s; paramiko in 32 KiB writes 4.1 s; two paramiko channels at once 3.9 s; paramiko
  in 1 MiB writes 5.5 s (its sendall copies what is left of a chunk after each 32 KiB packet: a
  memoryview avoids that). In a process of its own paramiko keeps up, but it costs ~1.3x the
  client's CPU, all under the GIL that the daemon's other threads need. In the daemon
  (bench/ssh_inputs.py, bare copy / first execution, three runs of each beside each other), a
  500 MB first input went at 0.41-0.62x over paramiko and at 0.71-0.86x over this path; what the
  input itself adds to the execution (first - second run) at 0.86-1.10x of the bare copy.
- the client prefers AES-GCM: aes128-gcm costs it 0.25 s of CPU for 500 MB, its default
  chacha20-poly1305 0.48 s.
- on the machine, `cat` then `openssl dgst` of the file (page cache, SHA instructions) beat
  hashing on the way through `head | tee | openssl` (placed in 1.87 s against 2.27 s, beside
  2.21 s for the bare copy): head and tee move 8 KiB a system call, cat 128 KiB.
A new connection costs 0.25-0.4 s to make (sshd starts a process of its own for each), so the
client keeps one master connection per host (ControlMaster, its socket in a 0700 folder of
this process) that later transfers open sessions on; idle for PERSIST_S, it ends by itself,
even after the daemon was killed. Files under MIN_BYTES go through the cache script's own
paramiko channel.

The host key is pinned, never learned: a known_hosts file of this transfer's own holds only
the pinned key (under a HostKeyAlias, whatever address the host has), with
StrictHostKeyChecking=yes and BatchMode=yes; the same private key alone (no agent, none of the
daemon user's keys or ~/.ssh/config). A host that shows another key is refused before a byte
moves (HostKeyMismatch). Where the client cannot be used at all (none installed, or it refused
the key file, which OpenSSH does for a key others can read), the host's transfers go over
paramiko, once said in the log.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from vh_orch.bootstrap.ssh import HostKeyMismatch, SSHTarget
from vh_orch.storage.input_cache import InputCacheError, Outgoing, quote_args

log = logging.getLogger(__name__)

MIN_BYTES = 64 << 20
ALIAS = "vh-orch-pinned"  # the pinned key's name in the transfer's known_hosts, whatever the address
HOST_KEY_REFUSED = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
                              r"No \S+ host key is known")
READY_TIMEOUT_S = 60.0  # connecting, authenticating and starting the command

PERSIST_S = 120  # an idle master connection ends after this long (even if this process was killed)

_unusable: dict[SSHTarget, str] = {}  # targets the client could not be used for, and why
_unusable_lock = threading.Lock()
_root: Path | None = None  # this process's folder of known_hosts files and master sockets


def client() -> str | None:
    """The OpenSSH client on this host, or None."""
    return shutil.which("ssh")


class OpenSSHBulk:
    """input_cache.Bulk for one SSH host."""

    min_bytes = MIN_BYTES

    def __init__(self, target: SSHTarget, ssh: str) -> None:
        self.target = target
        self.ssh = ssh

    def argv(self, folder: Path, command: str) -> list[str]:
        t = self.target
        options = {
            "BatchMode": "yes", "StrictHostKeyChecking": "yes", "UserKnownHostsFile": str(folder / "known_hosts"),
            "GlobalKnownHostsFile": "/dev/null", "HostKeyAlias": ALIAS, "CheckHostIP": "no", "UpdateHostKeys": "no",
            "IdentitiesOnly": "yes", "IdentityAgent": "none", "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no", "ForwardAgent": "no", "ForwardX11": "no",
            "ClearAllForwardings": "yes", "ControlMaster": "auto", "ControlPath": str(folder / "master"),
            "ControlPersist": str(PERSIST_S), "ConnectTimeout": str(max(1, round(t.connect_timeout_s))),
            "ServerAliveInterval": "15", "ServerAliveCountMax": "4",
            "Ciphers": "^aes128-gcm@openssh.com,aes256-gcm@openssh.com", "LogLevel": "ERROR",
        }
        argv = [self.ssh, "-F", "/dev/null", "-T", "-x", "-a", "-i", t.private_key_file, "-p", str(t.port),
                "-l", t.user]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        return [*argv, "--", t.host, command]

    def send(self, script: str, args: list[str], chunks: Outgoing) -> bool:
        with _unusable_lock:
            if self.target in _unusable:
                return False
        folder = _folder_for(self.target)
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_ASKPASS", "DISPLAY")}
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(self.argv(folder, quote_args(script, args)), env=env,
                                    stdin=chunks.file if chunks.file is not None else subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr)
            try:
                return self._run(proc, chunks, stderr)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()

    def _run(self, proc: subprocess.Popen[bytes], chunks: Outgoing, stderr: object) -> bool:
        assert proc.stdout is not None
        ready = _readline(proc, READY_TIMEOUT_S)
        if ready != b"READY\n":
            proc.wait(30)
            said = _said(stderr)
            if HOST_KEY_REFUSED.search(said):
                raise HostKeyMismatch(
                    f"the host key of {self.target.host}:{self.target.port} is not the pinned one: nothing was sent "
                    f"(the OpenSSH client said: {said.strip().splitlines()[-1]})")
            if chunks.file is not None:
                chunks.file.seek(0)  # whatever the client read before it gave up
            with _unusable_lock:
                _unusable[self.target] = said.strip() or f"exit status {proc.returncode}"
            log.warning("%s: the OpenSSH client cannot be used for bulk transfers (%s); using paramiko",
                        self.target.label, _unusable[self.target])
            return False
        if chunks.file is not None:
            chunks.handed_over()
        else:
            assert proc.stdin is not None
            try:
                for chunk in chunks:
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the exit status and stderr say why
        code = proc.wait()
        if code != 0:
            said = _said(stderr).strip().splitlines()
            raise InputCacheError(f"sending the input to {self.target.label} failed: "
                                  f"{said[-1] if said else f'exit status {code}'}")
        return True


def _folder_for(target: SSHTarget) -> Path:
    """The host's folder of this process (0700): its known_hosts, holding the pinned key alone, and the
    master connection's socket. Named for everything that makes the connection (the pinned key
    too), so a connection made with other settings is never reused."""
    global _root
    with _unusable_lock:
        if _root is None:
            _root = Path(tempfile.mkdtemp(prefix="vh-orch-ssh-"))
            atexit.register(shutil.rmtree, _root, True)
        name = hashlib.sha256(repr(target).encode()).hexdigest()[:16]
        folder = _root / name
        if not folder.exists():
            folder.mkdir(mode=0o700)
            part = folder / "known_hosts.part"
            part.write_text(f"{ALIAS} {target.host_key.strip()}\n")
            part.rename(folder / "known_hosts")
        return folder


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The command's first line, or b"" if it ended (or said nothing) within timeout."""
    assert proc.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        reader.join()
    return line[0] if line else b""


def _said(stderr: object) -> str:
    stderr.seek(0)  # type: ignore[attr-defined]
    return stderr.read().decode("utf-8", "replace")  # type: ignore[attr-defined]


def bulk_for(target: SSHTarget) -> OpenSSHBulk | None:
    """The bulk path to the host: the OpenSSH client where there is one."""
    ssh = client()
    return None if ssh is None else OpenSSHBulk(target, ssh)
