"""`vh-orch serve` for the tests, forked from a process that has already imported vh-orch.

A daemon started as `vh-orch serve` spends 1.5-2 s of CPU importing SQLAlchemy, the models, the
daemon and the HTTP API before it does anything; the suite starts some 150 of them on two cores.
Here each pytest process keeps one multiprocessing fork server that imported all that once; a
daemon is a fork of it that takes the test's environment, working folder, argv and log file and
runs the CLI's own entry point (`vh_orch.cli.main`), as the installed `vh-orch` command does.

It is a real process of its own (its own pid, signals, exit status, memory), so tests kill it,
pause it and read its /proc as before: `serve()` hands back an object with Popen's methods. What
differs from an exec'd command: its parent is the fork server, not the test, and its
/proc/PID/cmdline is the fork server's. Tests about the entry point itself run the executable
(`VhOrch.exe`); `VH_ORCH_TEST_SERVE=exec` makes every daemon a plain subprocess again.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from inprocess import ENVIRON_LOCK

# What a daemon imports before it says it started, and the work it would do once after: the
# fork server does it once (forkwarm.py), and every daemon forked from it starts past it.
PRELOAD = ["forkwarm"]

_context: multiprocessing.context.ForkServerContext | None = None


@contextmanager
def _tests_on_pythonpath() -> Iterator[None]:
    """Python 3.11's fork server is handed the test process's sys.path but never applies it: this
    folder (forkwarm) reaches it through PYTHONPATH, set while it starts. Every Process.start()
    may start it again (a test that kills a process group can take it down with the daemon).
    Under the in-process CLI's lock: a call running in another thread swaps the whole environment
    for its test's (without this folder), and a fork server started meanwhile preloaded nothing."""
    with ENVIRON_LOCK:
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent), saved) if p)
        try:
            yield
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved


def _fork_server() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)  # the server starts with the first daemon (serve)
        _context = context
    return _context


def _daemon_main(args: Sequence[str], env: Mapping[str, str], cwd: str, log: str) -> None:
    """In the forked child: become `vh-orch ARGS` with this environment, writing to log."""
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    if "forkwarm" not in sys.modules:  # the fork server skips a preload that fails, silently: say so
        print("forkserve: tests/forkwarm.py was not preloaded; this daemon imports everything itself",
              file=sys.stderr)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = ["vh-orch", *args]
    from vh_orch import failpoints
    from vh_orch.cli import main

    failpoints.arm_from_environment()  # read at import, which happened in the fork server
    main()


class Forked:
    """The parts of subprocess.Popen the tests use, for a daemon forked by the fork server."""

    def __init__(self, process: multiprocessing.process.BaseProcess, args: Sequence[str]) -> None:
        self._process = process
        self.args = list(args)

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not once it was reaped: the pid may be another process's by now
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def serve(exe: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> Forked | subprocess.Popen[bytes]:
    """`exe ARGS` (a `vh-orch serve ...` command line, without the executable's name) with this
    environment, its output appended to log."""
    if os.environ.get("VH_ORCH_TEST_SERVE") == "exec":
        with open(log, "ab") as out:
            return subprocess.Popen([exe, *args], env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    log.touch()  # there before the test first looks for what the daemon wrote
    process = _fork_server().Process(target=_daemon_main, args=(list(args), dict(env), os.getcwd(), str(log)),
                                     daemon=True)  # ended with the test process if a test leaves it running
    with _tests_on_pythonpath():
        process.start()
    return Forked(process, [exe, *args])
