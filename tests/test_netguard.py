"""Tests of the tests' network guard (tests/netguard.py, tests/sitecustomize/).

Every refused destination is refused by the guard before the real socket call,
so nothing leaves the machine; 192.0.2.1 and 2001:db8::1 are documentation
addresses (TEST-NET-1, RFC 3849) that no real host uses anyway.
These tests install the guard themselves and leave it installed (the test
session's conftest may rely on it); they remove only the violations they made.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

try:
    import netguard
except ImportError:  # tests/ became a package
    from tests import netguard

TESTS_DIR = Path(__file__).resolve().parent
SITECUSTOMIZE_DIR = TESTS_DIR / "sitecustomize"
BLOCKED_V4 = "192.0.2.1"
BLOCKED_V6 = "2001:db8::1"


@pytest.fixture
def guard():
    netguard.install()
    assert netguard.is_installed()
    start = len(netguard.violations)
    yield netguard
    # Forget only what this test provoked on purpose (it asserted on it).
    del netguard.violations[start:]


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that echoes one message per connection."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)  # accept() polls so teardown need not wait
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = conn.recv(1024)
                if data:
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=10)
    server.close()


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SITECUSTOMIZE_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.pop("VH_ORCH_NETGUARD", None)
    return env


def _new_violations(guard, before: int) -> list[str]:
    return guard.violations[before:]


# ------------------------------------------------------------------ refused


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(lambda s: s.connect((BLOCKED_V4, 9)), id="connect"),
        pytest.param(lambda s: s.connect_ex((BLOCKED_V4, 9)), id="connect_ex"),
    ],
)
def test_connect_to_non_loopback_ip_is_refused(guard, attempt):
    before = len(guard.violations)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        with pytest.raises(guard.NetworkGuardError) as excinfo:
            attempt(s)
    assert isinstance(excinfo.value, OSError)
    assert f"{BLOCKED_V4}:9" in str(excinfo.value)
    new = _new_violations(guard, before)
    assert len(new) == 1 and f"{BLOCKED_V4}:9" in new[0]


def test_create_connection_to_non_loopback_ip_is_refused(guard):
    before = len(guard.violations)
    with pytest.raises(guard.NetworkGuardError, match=BLOCKED_V4.replace(".", r"\.")):
        socket.create_connection((BLOCKED_V4, 9), timeout=1)
    assert len(_new_violations(guard, before)) == 1


def test_ipv6_and_udp_to_non_loopback_are_refused(guard):
    before = len(guard.violations)
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            with pytest.raises(guard.NetworkGuardError, match=r"2001:db8::1"):
                s.connect((BLOCKED_V6, 9, 0, 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(guard.NetworkGuardError, match="sendto"):
            s.sendto(b"x", (BLOCKED_V4, 9))
    assert len(_new_violations(guard, before)) == (2 if socket.has_ipv6 else 1)


def test_swallowed_violation_is_still_recorded(guard):
    before = len(guard.violations)
    try:  # code under test that hides the error must still be caught
        socket.create_connection((BLOCKED_V4, 9), timeout=1)
    except OSError:
        pass
    new = _new_violations(guard, before)
    assert len(new) == 1 and BLOCKED_V4 in new[0]


@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(lambda: socket.getaddrinfo("example.com", 443), id="getaddrinfo"),
        pytest.param(lambda: socket.gethostbyname("example.com"), id="gethostbyname"),
        pytest.param(lambda: socket.create_connection(("example.com", 443), timeout=1), id="create_connection"),
    ],
)
def test_dns_lookup_of_public_name_is_refused(guard, lookup):
    before = len(guard.violations)
    with pytest.raises(guard.NetworkGuardError, match="example.com"):
        lookup()
    new = _new_violations(guard, before)
    assert len(new) == 1 and "example.com" in new[0]


def test_connect_with_hostname_bypassing_getaddrinfo_is_refused(guard):
    before = len(guard.violations)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(guard.NetworkGuardError, match="example.com"):
            s.connect(("example.com", 80))
    assert len(_new_violations(guard, before)) == 1


# ------------------------------------------------------------------ allowed


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_connect_is_allowed(guard, listener, host):
    before = len(guard.violations)
    with socket.create_connection((host, listener), timeout=10) as conn:
        conn.sendall(b"ping")
        assert conn.recv(1024) == b"ping"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        assert s.connect_ex(("127.0.0.1", listener)) == 0
        s.sendall(b"pong")
        assert s.recv(1024) == b"pong"
    assert _new_violations(guard, before) == []


def test_other_loopback_addresses_and_bind_lookups_are_allowed(guard):
    before = len(guard.violations)
    # The whole 127.0.0.0/8 is loopback: a closed port answers "refused", not the guard.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        assert s.connect_ex(("127.0.0.9", 9)) != 0
    for host in (None, "0.0.0.0", "127.0.0.1", "localhost"):
        socket.getaddrinfo(host, 0, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    try:  # "" is passed to the C library as is (which may reject it): not the guard's business
        socket.getaddrinfo("", 0, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror:
        pass
    assert socket.gethostbyname("localhost").startswith("127.")
    assert _new_violations(guard, before) == []


def test_unix_socket_is_allowed(guard, tmp_path):
    before = len(guard.violations)
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(path)
            conn, _ = server.accept()
            with conn:
                client.sendall(b"hi")
                assert conn.recv(16) == b"hi"
    assert _new_violations(guard, before) == []


# ------------------------------------------------------------------ subprocesses


def test_subprocess_with_sitecustomize_refuses_non_loopback():
    code = (
        "import socket, sys\n"
        # Never try the address unless the guard is in place.
        "if not getattr(socket.socket.connect, '_vh_orch_netguard', False): sys.exit(3)\n"
        f"socket.create_connection(({BLOCKED_V4!r}, 9), timeout=1)\n"
        "print('connected')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "connected" not in proc.stdout
    assert "NetworkGuardError" in proc.stderr
    assert BLOCKED_V4 in proc.stderr


def test_subprocess_with_sitecustomize_allows_loopback(listener):
    code = (
        "import socket, sys\n"
        "if not getattr(socket.socket.connect, '_vh_orch_netguard', False): sys.exit(3)\n"
        f"c = socket.create_connection(('127.0.0.1', {listener}), timeout=10)\n"
        "c.sendall(b'sub'); print(c.recv(16).decode())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.strip() == "sub"


def test_uninstall_restores_socket_functions():
    # In a fresh interpreter, so this process's guard stays in place.
    code = (
        "import importlib.util, socket, _socket\n"
        f"spec = importlib.util.spec_from_file_location('netguard', {str(TESTS_DIR / 'netguard.py')!r})\n"
        "ng = importlib.util.module_from_spec(spec); spec.loader.exec_module(ng)\n"
        "orig = (socket.getaddrinfo, socket.socket.connect, socket.socket.sendto)\n"
        "ng.install(); ng.install()\n"
        "assert ng.is_installed() and socket.getaddrinfo is not orig[0]\n"
        "ng.uninstall()\n"
        "assert not ng.is_installed()\n"
        "assert (socket.getaddrinfo, socket.socket.connect, socket.socket.sendto) == orig\n"
        "assert 'connect' not in vars(socket.socket)\n"
        "print('ok')\n"
    )
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
