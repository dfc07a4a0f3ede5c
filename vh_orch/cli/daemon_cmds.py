"""`vh-orch init` and `vh-orch serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import open_store, settings


def init() -> None:
    """Create or upgrade the database (never drops data) and the `local` environment."""
    from vh_orch.cli.common import note
    from vh_orch.config.environments import parse_entry
    from vh_orch.orchestrator.db import upgrade
    from vh_orch.orchestrator.store import Store

    s = settings()
    s.ensure_dirs()
    upgrade(s.db_url)
    store = Store(s.db_url)
    local = parse_entry({"name": "local", "cloud": "local", "min_scale": 1, "max_scale": 1}, "local")
    _, created = store.ensure_environment("local", "local", settings=local.settings, **local.columns)
    store.cluster_id()
    note(f"vh-orch is ready in {s.home}" + (" (environment `local` created)" if created else ""))


def serve(
    once: Annotated[bool, typer.Option("--once", help="One pass (for cron): start queued work, wait for it")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    listen: Annotated[str, typer.Option("--listen", envvar="VH_ORCH_LISTEN",
                                        help="Where the HTTP API listens, HOST:PORT (port 0: any free one)")
                      ] = "127.0.0.1:8700",
    no_http: Annotated[bool, typer.Option("--no-http", help="Serve no HTTP API (the CLI still works)")] = False,
    trusted_proxy: Annotated[str, typer.Option(
        "--trusted-proxy", envvar="VH_ORCH_TRUSTED_PROXIES",
        help="Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For and "
             "X-Forwarded-Proto headers are believed; nobody's by default")] = "",
    max_upload_mb: Annotated[int, typer.Option(
        "--max-upload-mb", envvar="VH_ORCH_MAX_UPLOAD_MB", min=1, max=1024 * 1024,
        help="The largest ad-hoc package an API upload may be, in MiB")] = 1024,
) -> None:
    """Run the daemon: launches, dispatches and supervises executions until SIGTERM or SIGINT."""
    import logging
    import signal
    import threading

    from vh_orch.orchestrator.daemon import Daemon

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    s = settings()
    s.ensure_dirs()
    store = open_store(s)
    http = not (once or no_http)
    if http:
        from vh_orch.api.server import parse_listen, parse_proxies

        parse_listen(listen)  # a malformed address is refused before anything starts
        proxies = parse_proxies(trusted_proxy)
    api = None
    daemon = Daemon(s, store)
    stop = threading.Event()

    def _on_signal(signum, _frame):  # type: ignore[no-untyped-def]
        logging.getLogger(__name__).info("signal %s: shutting down", signal.Signals(signum).name)
        stop.set()
        daemon._stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if once:
        daemon.run_once()
        return
    daemon.start()
    try:
        if http:
            from vh_orch.api.server import ApiServer

            # After the daemon's claim: a second daemon says so, not "port busy".
            api = ApiServer(store, s, listen, trusted_proxies=proxies, max_upload_bytes=max_upload_mb * 1024 * 1024)
            api.start()
        while not stop.wait(1.0):
            pass
    finally:
        if api is not None:
            api.stop()
        daemon.shutdown()
