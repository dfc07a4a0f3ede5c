"""`vh-orch ARGS` run in the tests' own process, through the CLI's own entry point (`vh_orch.cli.main`):
the same parsing, the same quick read path, the same exit statuses and printed text as the installed
command, without a Python start (~0.7 s of importing SQLAlchemy and the models) per call.

What stays a subprocess (VhOrch decides): `serve`, and whatever blocks until something else happens
(`--follow`, `exec wait`, `task wait`), so that a test's timeout can still end it; and every test about
the entry point itself, signals or the environment of a real process calls the executable directly.

One call at a time per process (a lock): the environment, the working folder, argv, stdin/stdout and the
umask are the process's own, set for the call and put back after it. Whoever else changes the process's
environment for a moment takes the same lock (ENVIRON_LOCK: forkserve.py, as it starts its fork server).
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from click.testing import CliRunner

ENVIRON_LOCK = threading.RLock()
_runner = CliRunner()
_commands: dict[int, tuple[object, object]] = {}


def _cache_typer_commands() -> None:
    """Typer turns the app into a Click command tree at every call (0.1-0.2 s for vh-orch's): a real
    process does that once, and so does this one now."""
    import typer.main

    build = typer.main.get_command
    if getattr(build, "vh_orch_cached", False):
        return

    def cached(app: object) -> object:
        if id(app) not in _commands:
            _commands[id(app)] = (app, build(app))  # the app is kept: its id stays its own
        return _commands[id(app)][1]

    cached.vh_orch_cached = True  # type: ignore[attr-defined]
    typer.main.get_command = cached  # type: ignore[assignment]


def blocks(args: Sequence[str]) -> bool:
    """Whether a command waits on something outside itself (a daemon, an execution's end)."""
    return (not args or args[0] == "serve" or "--follow" in args or "-f" in args
            or tuple(args[:2]) in (("exec", "wait"), ("task", "wait")))


def run(env: Mapping[str, str], args: Sequence[str], cwd: Path | None = None,
        stdin: str | None = None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `vh-orch ARGS` with exactly this environment."""
    from vh_orch.cli import main

    _cache_typer_commands()
    overrides: dict[str, str | None] = {key: None for key in os.environ if key not in env}
    overrides.update(env)
    with ENVIRON_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
        argv, here = sys.argv, os.getcwd()
        try:
            with _runner.isolation(input=stdin or "", env=overrides) as (out, err, _):
                sys.argv = ["vh-orch", *args]
                if cwd is not None:
                    os.chdir(cwd)
                code = _call(main)
                sys.stdout.flush()
                sys.stderr.flush()
                return code, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace")
        finally:
            sys.argv = argv
            os.chdir(here)
            os.umask(umask)
            _close_databases(env)


def _call(main: object) -> int:
    try:
        main()  # type: ignore[operator]
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:  # what would escape the real command: its traceback, status 1
        traceback.print_exc()
        return 1
    return 0


def _close_databases(env: Mapping[str, str]) -> None:
    """Close the call's pooled database connections: a test makes hundreds of homes, and an open
    SQLite connection per home would pile up (and hold files the test may look at)."""
    db = sys.modules.get("vh_orch.orchestrator.db")
    if db is None:
        return
    url = env.get("VH_ORCH_DB") or f"sqlite:///{Path(env['VH_ORCH_HOME']) / 'state.db'}"
    db.get_engine(url).dispose()
