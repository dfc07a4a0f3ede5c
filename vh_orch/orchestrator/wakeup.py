"""Waking the daemon: a datagram on an abstract Unix socket named after the database.

Its own small module, so that the commands that submit or stop work (`exec run`, `task run`,
the API's routes) do not import the daemon, APScheduler and the runtimes to send one datagram.
The daemon's end, `listen`, lives here too: both ends agree on the address in one place.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from collections.abc import Callable

from vh_orch.settings import Settings

log = logging.getLogger(__name__)


def wakeup_address(settings: Settings) -> str:
    digest = hashlib.sha256(settings.db_url.encode()).hexdigest()[:24]
    return f"\0vh-orch-{digest}"


def notify_daemon(settings: Settings) -> None:
    """Ask a running daemon for a pass now; harmless when none is running."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"wake", wakeup_address(settings))
    except OSError:
        pass


def listen(settings: Settings, stopping: threading.Event, woken: Callable[[], bool]) -> None:
    """The daemon's end: call `woken` for each datagram until `stopping` is set, or until `woken`
    answers False (its scheduler is shut down)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(wakeup_address(settings))
        except OSError as exc:
            log.warning("no prompt wake-ups (cannot bind the wake-up socket: %s); polling only", exc)
            return
        sock.settimeout(0.5)
        while not stopping.is_set():
            try:
                sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            if not woken():
                return
