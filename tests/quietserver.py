"""Loopback HTTP servers for test doubles: started in a thread of their own, and quiet when a
client hangs up (curl and urllib3 close idle keep-alive connections whenever they like)."""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def serve(handler: type[BaseHTTPRequestHandler], name: str, port: int = 0,
          poll_s: float = 0.5) -> QuietHTTPServer:
    """A server for handler on 127.0.0.1 (port 0: any free one), answering from a daemon thread."""
    server = QuietHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, args=(poll_s,), name=name, daemon=True).start()
    return server


def shut(server: QuietHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A loopback port nothing listens on right now (for servers that must be told one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
