"""`vh-orch init` and `vh-orch serve`."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Annotated

import typer

from vh_orch.api.allowlist import DEFAULT_METRICS_ALLOW
from vh_orch.cli.common import open_store, settings


def init() -> None:
    """Create or upgrade the database (never drops data) and the `local` environment; make the home
    private to this user (0700 folders, 0600 files), also an existing one."""
    from vh_orch.cli.common import note
    from vh_orch.config.environments import BUILTIN_ENVIRONMENT, parse_entry
    from vh_orch.orchestrator.db import upgrade
    from vh_orch.orchestrator.store import Store

    s = settings()
    s.ensure_dirs()
    upgrade(s.db_url)
    store = Store(s.db_url)
    local = parse_entry({"name": BUILTIN_ENVIRONMENT, "cloud": "local", "min_scale": 1, "max_scale": 1}, "local")
    _, created = store.ensure_environment(local.name, local.cloud, settings=local.settings, **local.columns)
    store.cluster_id()
    from vh_orch.keyring import ensure_key_file, key_file

    if ensure_key_file(s.home):
        note(f"made the secret key {key_file(s.home)}: back it up with the database (secrets cannot be read without it)")
    tightened = s.tighten()  # an installation made before its files were private, or loosened since
    note(f"vh-orch is ready in {s.home}" + (" (environment `local` created)" if created else ""))
    if tightened:
        note(f"made {tightened} files and folders in {s.home} private to this user")


def serve(
    once: Annotated[bool, typer.Option("--once", help="One pass (for cron): start queued work, wait for it")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    listen: Annotated[str, typer.Option("--listen", envvar="VH_ORCH_LISTEN",
                                        help="Where the HTTP API listens, HOST:PORT (port 0: any free one)")
                      ] = "127.0.0.1:8700",
    no_http: Annotated[bool, typer.Option("--no-http", help="Serve no HTTP API (the CLI still works)")] = False,
    metrics_allow: Annotated[str, typer.Option(
        "--metrics-allow", envvar="VH_ORCH_METRICS_ALLOW", metavar="CIDR[,CIDR...]",
        help="Client addresses that may read /metrics (no token needed; others get 403)",
    )] = DEFAULT_METRICS_ALLOW,
    log_format: Annotated[str, typer.Option("--log-format", envvar="VH_ORCH_LOG_FORMAT", metavar="text|json",
                                            help="The log on stderr: text, or one JSON object a line")] = "text",
    trusted_proxy: Annotated[str, typer.Option(
        "--trusted-proxy", envvar="VH_ORCH_TRUSTED_PROXIES", metavar="ADDRESS[,NETWORK...]",
        help="Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto headers are believed; nobody's by default",
    )] = "",
    max_upload_mb: Annotated[int, typer.Option(
        "--max-upload-mb", envvar="VH_ORCH_MAX_UPLOAD_MB", min=1, max=1024 * 1024,
        help="The largest ad-hoc package an API upload may be, in MiB")] = 1024,
    max_package_files: Annotated[int, typer.Option(
        "--max-package-files", envvar="VH_ORCH_MAX_PACKAGE_FILES", min=1, max=100_000_000,
        help="The most files and folders an uploaded ad-hoc package may hold")] = 100_000,
    max_metadata_keys: Annotated[int, typer.Option(
        "--max-metadata-keys", envvar="VH_ORCH_MAX_METADATA_KEYS", min=1, max=1_000_000,
        help="The most distinct metadata keys an execution may have; lines with new keys past it stay log lines")
    ] = 1000,
    allow_fetch: Annotated[list[str] | None, typer.Option(
        "--allow-fetch", envvar="VH_ORCH_ALLOW_FETCH", metavar="CIDR",
        help="A network that inputs of executions submitted through the API may be fetched from, besides public "
             "addresses (repeatable; the env var takes a comma-separated list): e.g. a data server on 10.20.0.0/16",
    )] = None,
    max_user_priority: Annotated[int, typer.Option(
        "--max-user-priority", envvar="VH_ORCH_MAX_USER_PRIORITY", min=0, max=1_000_000,
        help="The highest priority a user who is not an administrator may give an execution or task")] = 10,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", envvar="VH_ORCH_ALLOWED_HOSTS", metavar="HOST[,HOST...]",
        help="Host names the HTTP server answers to (repeatable; others get 400); any when unset",
    )] = None,
    public_url: Annotated[str, typer.Option(
        "--public-url", envvar="VH_ORCH_PUBLIC_URL", metavar="URL",
        help="Where people reach the web pages (e.g. https://orch.example.com): the links webhooks send; "
             "default: the address the HTTP API listens on")] = "",
) -> None:
    """Run the daemon: launches, dispatches and supervises executions until SIGTERM or SIGINT."""
    import logging

    from vh_orch.cli.logsetup import configure_logging, parse_log_format
    from vh_orch.errors import VhOrchError

    log_format = parse_log_format(log_format)
    configure_logging(log_format, verbose)
    try:
        _serve(ServeOptions(once, listen, no_http, metrics_allow, trusted_proxy, max_upload_mb, max_package_files,
                            max_metadata_keys, tuple(allow_fetch or ()), max_user_priority,
                            tuple(allowed_host or ()), public_url))
    except VhOrchError as exc:
        if log_format != "json":
            raise  # printed as `error: ...` like any command's
        logging.getLogger(__name__).error("%s", exc)
        raise typer.Exit(1) from None


@dataclass(frozen=True)
class ServeOptions:
    """`serve`'s options as given (each is checked before anything starts)."""

    once: bool
    listen: str
    no_http: bool
    metrics_allow: str
    trusted_proxy: str
    max_upload_mb: int
    max_package_files: int
    max_metadata_keys: int
    allow_fetch: tuple[str, ...]
    max_user_priority: int
    allowed_host: tuple[str, ...]
    public_url: str = ""


def _serve(o: ServeOptions) -> None:
    import dataclasses
    import logging
    import signal
    import threading

    once = o.once
    http = not (once or o.no_http)
    if http:  # malformed settings are refused before anything starts
        from vh_orch.api.allowlist import parse_allow
        from vh_orch.api.server import parse_listen, parse_proxies
        from vh_orch.api.site_guard import parse_allowed_hosts

        parse_listen(o.listen)
        allowed = parse_allow(o.metrics_allow)
        proxies = parse_proxies(o.trusted_proxy)
        hosts = parse_allowed_hosts(list(o.allowed_host))
    from vh_orch.orchestrator.daemon import Daemon
    from vh_orch.storage.fetch_policy import parse_networks

    parse_networks(o.allow_fetch)  # a malformed network is refused before anything starts
    s = dataclasses.replace(settings(), allow_fetch=o.allow_fetch, max_user_priority=o.max_user_priority,
                            max_metadata_keys=o.max_metadata_keys)
    s.ensure_dirs()
    store = open_store(s)
    store.public_url = o.public_url.rstrip("/")  # the links in webhooks' bodies
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
    daemon.claim()
    try:
        if http:
            from vh_orch.api.server import ApiServer

            # After the daemon's claim (a second daemon says so, not "port busy"), before its first
            # pass: what ends from then on links to the address the API is reached at.
            api = ApiServer(store, s, o.listen, metrics_allow=allowed, daemon_metrics=daemon.metrics,
                            trusted_proxies=proxies, max_upload_bytes=o.max_upload_mb * 1024 * 1024,
                            max_package_files=o.max_package_files, allowed_hosts=hosts)
            api.start()
            store.public_url = store.public_url or api.url
        daemon.start()
        # What starting made (modules, the ORM's mappers, the web app) lives as long as the process:
        # the collector's full passes skip it from now on instead of walking it each time.
        gc.collect()
        gc.freeze()
        while not stop.wait(1.0):
            pass
    finally:
        if api is not None:
            api.stop()
        daemon.shutdown()
