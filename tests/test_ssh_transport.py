"""The SSH transport against real sshd processes on loopback."""

from __future__ import annotations

import socket

import pytest

from conftest import SSHPool
from vh_orch.bootstrap.ssh import HostKeyMismatch, SSHError, SSHTarget, SSHTransport


def target(pool: SSHPool, n: int = 0, **kw) -> SSHTarget:  # type: ignore[no-untyped-def]
    host = pool.hosts[n]
    base = dict(host=host.address, port=host.port, user="root", private_key_file=str(pool.client_key),
                host_key=host.host_key, connect_timeout_s=5)
    base.update(kw)
    return SSHTarget(**base)  # type: ignore[arg-type]


def test_commands_run_with_exit_status_and_separate_streams(ssh_pool: SSHPool) -> None:
    t = SSHTransport(target(ssh_pool))
    result = t.run("echo out; echo err >&2; exit 7")
    assert (result.code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert t.run("cat", stdin=b"piped").stdout == "piped"
    t.close()


def test_one_connection_is_reused_with_tcp_nodelay(ssh_pool: SSHPool) -> None:
    t = SSHTransport(target(ssh_pool))
    first = t.connect()
    t.run("true")
    assert t.connect() is first
    sock = first.get_transport().sock  # type: ignore[union-attr]
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    # AES-GCM where the host offers it (OpenSSH does): paramiko checks its tag in C, not byte by byte.
    assert first.get_transport().remote_cipher == "aes128-gcm@openssh.com"  # type: ignore[union-attr]
    t.close()


def test_output_streams_line_by_line(ssh_pool: SSHPool) -> None:
    t = SSHTransport(target(ssh_pool))
    cmd = t.start("for i in 1 2 3; do echo line $i; done; echo oops >&2; exit 3")
    assert cmd.stdout.readline() == b"line 1\n"
    assert cmd.stdout.read() == b"line 2\nline 3\n"
    assert cmd.stderr.read() == b"oops\n"
    assert cmd.wait(10) == 3
    t.close()


def test_a_host_key_that_does_not_match_is_refused(ssh_pool: SSHPool) -> None:
    wrong = ssh_pool.hosts[1].host_key  # the other host's key
    t = SSHTransport(target(ssh_pool, host_key=wrong))
    with pytest.raises(HostKeyMismatch, match=f"the host key of {ssh_pool.hosts[0].address}:22 did not match"):
        t.run("true")


def test_an_unreachable_host_fails_within_its_timeout(ssh_pool: SSHPool) -> None:
    t = SSHTransport(target(ssh_pool, host=ssh_pool.spare(99), connect_timeout_s=2))
    with pytest.raises(SSHError, match=f"cannot reach root@{ssh_pool.spare(99)}:22"):
        t.run("true")


def test_a_cut_connection_is_reopened(ssh_pool: SSHPool) -> None:
    t = SSHTransport(target(ssh_pool))
    assert t.run("echo before").stdout == "before\n"
    ssh_pool.hosts[0].kill_sessions()
    assert t.run("echo after").stdout == "after\n"
    t.close()
