"""The chaos suite's fault injectors: the daemon (kills, failpoints), a TCP proxy that cuts
SSH connections, and a SQLite write lock held by another process.

The Docker engine restart and the full disks live with the world (chaos_world.py).
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import forkserve
from conftest import VhOrch

FAILPOINT_ENV = "VH_ORCH_FAILPOINT"
START_WAIT_S = 60
SIGTERM_WAIT_S = 120  # a SIGTERM'd daemon stops its local executions (5 s grace each) and exits


class Daemon:
    """`vh-orch serve` for one home, as an operator or systemd runs it: started, killed, restarted.

    Unlike VhOrch.start_daemon, a start tolerates a daemon that dies at once (an armed
    failpoint may fire before it says it started)."""

    def __init__(self, vh: VhOrch) -> None:
        self.vh = vh
        self.process: forkserve.Forked | subprocess.Popen[bytes] | None = None
        self.failpoint: str | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, failpoint: str | None = None) -> None:
        """Start it (with a failpoint armed, or none); returns once it said it started, or died."""
        assert not self.alive()
        env = dict(self.vh.env)
        if failpoint:
            env[FAILPOINT_ENV] = failpoint
        log = self.vh.daemon_log
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            out.write(f"=== chaos: starting vh-orch serve (failpoint {failpoint or 'none'})\n".encode())
        self.process = forkserve.serve(self.vh.exe, ["serve"], env, log)
        self.failpoint = failpoint
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            with open(log, "rb") as f:
                f.seek(offset)
                if b"vh-orch daemon started" in f.read():
                    return
            time.sleep(0.05)
        if self.process.poll() is None:
            raise AssertionError(f"vh-orch serve did not say it started within {START_WAIT_S} s")

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait_dead(self, timeout: float) -> bool:
        assert self.process is not None
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self, sig: int) -> float:
        """Send sig and wait for the exit (a SIGTERM that is not obeyed in time ends in SIGKILL);
        returns how long the exit took."""
        assert self.process is not None
        began = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            if not self.wait_dead(SIGTERM_WAIT_S if sig == signal.SIGTERM else 30):
                self.process.kill()
                self.process.wait(30)
        return time.monotonic() - began


class TcpProxy:
    """A threaded TCP proxy on loopback; `cut()` resets every open connection (the listener stays)."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        self.listen = listen
        self.upstream = upstream
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.upstream_bytes = 0  # what the clients sent through it (to the upstream server)

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(self.listen)
        server.listen(64)
        server.settimeout(0.5)
        self._server = server
        threading.Thread(target=self._accept, name="chaos-proxy", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self.cut()
        if self._server is not None:
            self._server.close()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open) // 2

    def cut(self) -> int:
        """Reset every open connection, both ways; returns how many pairs were cut."""
        with self._lock:
            doomed, self._open = list(self._open), set()
        for sock in doomed:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return len(doomed) // 2

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open.update((client, upstream))
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if up:
                    with self._lock:
                        self.upstream_bytes += len(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self._lock:
            self._open.discard(src)
            self._open.discard(dst)


def hold_write_lock(db: Path, seconds: float) -> float:
    """Another process's view of SQLite busy: take the write lock (`BEGIN IMMEDIATE`), hold it for
    `seconds`, let go. Returns how long getting the lock took."""
    began = time.monotonic()
    con = sqlite3.connect(db, timeout=120, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        waited = time.monotonic() - began
        time.sleep(seconds)
        con.execute("ROLLBACK")
    finally:
        con.close()
    return waited
