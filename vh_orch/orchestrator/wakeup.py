"""Waking the daemon: a datagram on an abstract Unix socket named after the database.

Its own small module, so that the commands that submit or stop work (`exec run`, `task run`,
the API's routes) do not import the daemon, APScheduler and the runtimes to send one datagram.
"""

from __future__ import annotations

import hashlib
import socket

from vh_orch.settings import Settings


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
