"""The HTTP server inside `vh-orch serve`: uvicorn on a thread of its own, on a socket bound first
(so a busy port is a clear error at start, never a thread that died quietly)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vh_orch.errors import UserInputError

if TYPE_CHECKING:  # parse_listen runs before serve loads anything heavy
    from vh_orch.api.allowlist import Network
    from vh_orch.orchestrator.metrics import DaemonMetrics
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8700"
START_TIMEOUT_S = 15.0


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8700` for IPv6; port 0 picks a free one)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserInputError(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:8700, [::1]:8700, 0.0.0.0:8700)")
    return host, int(port)


def parse_proxies(text: str) -> list[str]:
    """`--trusted-proxy`: addresses or networks whose X-Forwarded-For/-Proto headers are believed."""
    proxies = [part.strip() for part in text.split(",") if part.strip()]
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise UserInputError(f"--trusted-proxy {proxy!r} is not an IP address or network (e.g. 127.0.0.1, "
                                 "10.0.0.0/8); forwarded headers are only believed from the addresses listed") from None
    return proxies


class ApiServer:
    def __init__(self, store: Store, settings: Settings, listen: str, *, metrics_allow: Sequence[Network] | None = None,
                 daemon_metrics: DaemonMetrics | None = None, trusted_proxies: list[str] | None = None,
                 max_upload_bytes: int | None = None, max_package_files: int | None = None,
                 allowed_hosts: Sequence[str] = ()) -> None:
        import uvicorn

        from vh_orch.api.allowlist import LOOPBACK
        from vh_orch.api.app import DEFAULT_MAX_UPLOAD_BYTES, create_app
        from vh_orch.storage.packages import DEFAULT_MAX_MEMBERS

        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise UserInputError(f"cannot listen on {listen}: {exc.strerror or exc}; choose another with "
                                 "--listen HOST:PORT (or VH_ORCH_LISTEN), or --no-http") from None
        self.sock.listen(128)
        bound = self.sock.getsockname()
        shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        app = create_app(store, settings, max_upload_bytes=max_upload_bytes or DEFAULT_MAX_UPLOAD_BYTES,
                         max_package_files=max_package_files or DEFAULT_MAX_MEMBERS,
                         metrics_allow=LOOPBACK if metrics_allow is None else metrics_allow,
                         daemon_metrics=daemon_metrics, allowed_hosts=allowed_hosts)
        # X-Forwarded-For/-Proto only from the proxies named; from anyone else they are ignored.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5,
                                proxy_headers=bool(trusted_proxies), forwarded_allow_ips=trusted_proxies or [],
                                server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="vh-orch-http", daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start; see the log above")
            time.sleep(0.02)
        log.info("HTTP API on %s (docs: %s/api/docs; web UI: %s/)", self.url, self.url, self.url)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
