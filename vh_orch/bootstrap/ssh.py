"""SSH transport (paramiko): pinned host keys, TCP_NODELAY, timeouts, keepalives, reconnects.

One connection per machine, reused by every command; commands stream stdout and stderr
line by line and report their exit status. Files travel inside commands' streams (tar
on stdin or stdout), so a host needs no SFTP subsystem.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import IO

import paramiko

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 15

# AES-GCM first: its tag is checked in C, where paramiko checks an HMAC byte by byte in Python
# (a third of its time receiving a chatty log, which arrives in packets of a few hundred bytes).
_AEAD = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class _Transport(paramiko.Transport):
    _preferred_ciphers = (*_AEAD, *(c for c in paramiko.Transport._preferred_ciphers if c not in _AEAD))


class SSHError(Exception):
    """The host could not be reached or refused us; the message says which and why."""


class HostKeyMismatch(SSHError):
    """The host presented a key other than the pinned one: it must never be used."""


@dataclass(frozen=True)
class SSHTarget:
    host: str
    port: int
    user: str
    private_key_file: str
    host_key: str  # pinned, "ssh-ed25519 AAAA..." (a known_hosts line without the host name)
    connect_timeout_s: float = CONNECT_TIMEOUT_S

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def parse_host_key(text: str) -> paramiko.PKey:
    parts = text.strip().split()
    if len(parts) < 2:
        raise SSHError(f"host key {text!r} is not of the form 'TYPE BASE64' (e.g. ssh-ed25519 AAAA...)")
    try:
        return paramiko.PKey.from_type_string(parts[0], __import__("base64").b64decode(parts[1]))
    except Exception as exc:
        raise SSHError(f"host key {text[:40]!r}... cannot be read: {exc}") from None


def load_private_key(path: str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise SSHError(f"private key file {path} does not exist") from None
    except Exception as exc:
        raise SSHError(f"private key file {path} cannot be read: {exc}") from None


class RemoteCommand:
    """A command running over SSH; stdout/stderr are binary files read line by line."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.stdout: IO[bytes] = channel.makefile("rb", -1)  # type: ignore[assignment]
        self.stderr: IO[bytes] = channel.makefile_stderr("rb", -1)  # type: ignore[assignment]

    def poll(self) -> int | None:
        return self.channel.recv_exit_status() if self.channel.exit_status_ready() else None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.channel.exit_status_ready():
            if self.channel.closed and not self.channel.exit_status_ready():
                return -1
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the remote command did not end in time")
            time.sleep(0.01)
        return self.channel.recv_exit_status()

    def close(self) -> None:
        self.channel.close()


@dataclass(frozen=True)
class RunResult:
    code: int
    stdout: str
    stderr: str


class SSHTransport:
    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    # -- connection ---------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        """The open connection, (re)connecting when needed; raises SSHError or HostKeyMismatch."""
        with self._lock:
            client = self._client
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                client.close()
            self._client = self._open()
            return self._client

    def _open(self) -> paramiko.SSHClient:
        t = self.target
        pinned = parse_host_key(t.host_key)
        key = load_private_key(t.private_key_file)
        try:
            sock = socket.create_connection((t.host, t.port), timeout=t.connect_timeout_s)
        except OSError as exc:
            raise SSHError(f"cannot reach {t.label}: {exc.strerror or exc}") from None
        # Without TCP_NODELAY every short command waits on Nagle's algorithm (~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = paramiko.SSHClient()
        # Pinned, never learned: an unknown or different key is refused.
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        known_as = t.host if t.port == 22 else f"[{t.host}]:{t.port}"
        client.get_host_keys().add(known_as, pinned.get_name(), pinned)
        try:
            client.connect(
                t.host, port=t.port, username=t.user, pkey=key, sock=sock, timeout=t.connect_timeout_s,
                banner_timeout=t.connect_timeout_s, auth_timeout=t.connect_timeout_s,
                allow_agent=False, look_for_keys=False, transport_factory=_Transport,
            )
        except paramiko.BadHostKeyException as exc:
            sock.close()
            raise HostKeyMismatch(
                f"the host key of {t.host}:{t.port} did not match: expected {pinned.get_name()} "
                f"{pinned.get_fingerprint().hex()}, got {exc.key.get_name()} {exc.key.get_fingerprint().hex()}"
            ) from None
        except paramiko.AuthenticationException as exc:
            sock.close()
            raise SSHError(f"{t.label} refused the key {t.private_key_file}: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            sock.close()
            raise SSHError(f"cannot connect to {t.label}: {exc}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_S)
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _channel(self) -> paramiko.Channel:
        for attempt in range(3):
            client = self.connect()
            transport = client.get_transport()
            try:
                assert transport is not None
                return transport.open_session(timeout=self.target.connect_timeout_s)
            except (paramiko.SSHException, EOFError, OSError, AssertionError) as exc:
                log.info("%s: reconnecting after %s", self.target.label, exc)
                self.close()
                time.sleep(0.2 * 2**attempt)
        raise SSHError(f"cannot open a session on {self.target.label}")

    # -- commands ---------------------------------------------------------------------

    def start(self, command: str) -> RemoteCommand:
        channel = self._channel()
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            channel.close()
            self.close()
            raise SSHError(f"{self.target.label}: cannot start a command: {exc}") from None
        return RemoteCommand(channel)

    def run(self, command: str, stdin: bytes | None = None, timeout: float | None = 120) -> RunResult:
        channel = self._channel()
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin)
                channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            # The command may have ended early without reading its input: its own word, if any, says why.
            if channel.exit_status_ready():
                code = channel.recv_exit_status()
                err = _drain(channel.makefile_stderr("rb", -1))
                channel.close()
                raise SSHError(f"{self.target.label}: the command ended (exit status {code}) before it read "
                               f"its input: {err.strip().splitlines()[-1] if err.strip() else exc}") from None
            channel.close()
            self.close()
            raise SSHError(f"{self.target.label}: the connection broke while sending to a command: {exc}") from None
        try:
            out = channel.makefile("rb", -1).read()
            err = channel.makefile_stderr("rb", -1).read()
            code = channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise SSHError(f"{self.target.label}: the connection broke during a command: {exc}") from None
        finally:
            channel.close()
        if code == -1:
            # No exit status: the connection died under the command; its output is not to be trusted.
            self.close()
            raise SSHError(f"{self.target.label}: the connection broke during a command")
        return RunResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def _drain(stream: IO[bytes]) -> str:
    try:
        return stream.read().decode("utf-8", "replace")
    except (OSError, EOFError, paramiko.SSHException):
        return ""


_transports: dict[SSHTarget, SSHTransport] = {}
_transports_lock = threading.Lock()


def transport_for(target: SSHTarget) -> SSHTransport:
    """The one shared transport (and so one connection) per machine in this process."""
    with _transports_lock:
        transport = _transports.get(target)
        if transport is None:
            transport = _transports[target] = SSHTransport(target)
        return transport
