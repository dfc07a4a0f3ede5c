"""Named points at which the daemon kills itself, for crash tests. Inert unless set.

`VH_ORCH_FAILPOINT` names one or more points, comma-separated, each optionally with
the hit that fires it (`after-outputs-uploaded`, `log-follow:3`: the third time).
It is read once, when this module is first imported; the daemon imports it at start.
A point that fires sends SIGKILL to this process, which ends it at once, exactly
as a power cut or the OOM killer would: nothing is flushed, no handler runs.
With `=stop` (`command-start=stop`, `log-follow:3=stop`) it sends SIGSTOP instead: the
whole process freezes there, as a paused VM or a stalled host would, until SIGCONT.

The points, in the order an execution meets them:

    launch-row-written        a machine row is committed, the cloud not yet asked
    launch-call-returned      the cloud launched the instance, the row not yet updated
    bootstrap-step            a bootstrap step is recorded
    input-transfer            an input file is half sent to a machine, or being copied from its cache
    command-start             the inputs are in place, the command not started yet
    process-started           the process exists, its handle (pid file) not yet saved
    container-started         the container runs, nothing of it read yet
    log-follow                a batch of log lines is stored
    output-upload             one output file is in the datastore
    after-outputs-uploaded    every output is in the datastore, nothing recorded yet
    after-result-recorded     the result and outputs are committed, nothing cleaned up

and in a pipeline's life (orchestrator/pipelines/engine.py):

    pipeline-work-made        a node's execution or task is committed, its node row (a task's) not yet updated
    pipeline-node-ended       a node's end is recorded, nothing downstream of it started yet
"""

from __future__ import annotations

import os
import signal
import threading
import time

ENV = "VH_ORCH_FAILPOINT"
POINTS = (
    "launch-row-written", "launch-call-returned", "bootstrap-step", "input-transfer", "command-start", "process-started",
    "container-started", "log-follow", "output-upload", "after-outputs-uploaded", "after-result-recorded",
    "pipeline-work-made", "pipeline-node-ended",
)


ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def _parse(text: str) -> dict[str, tuple[int, signal.Signals]]:
    armed: dict[str, tuple[int, signal.Signals]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, action = item.partition("=")
        name, _, nth = point.partition(":")
        if name not in POINTS:
            raise SystemExit(f"{ENV}: unknown failpoint {name!r}; known: {', '.join(POINTS)}")
        if (action or "kill") not in ACTIONS:
            raise SystemExit(f"{ENV}: {item!r}: the action after '=' is one of {', '.join(ACTIONS)}")
        try:
            armed[name] = (int(nth) if nth else 1, ACTIONS[action or "kill"])
        except ValueError:
            raise SystemExit(f"{ENV}: {item!r} is not NAME, NAME:N or either with =ACTION") from None
    return armed


_armed = _parse(os.environ.get(ENV, ""))
_hits: dict[str, int] = {}
_lock = threading.Lock()


def arm_from_environment() -> None:
    """Read VH_ORCH_FAILPOINT again: for a process forked after this module was imported with
    another environment (the tests' fork server)."""
    global _armed
    _armed = _parse(os.environ.get(ENV, ""))
    _hits.clear()


def hit(name: str) -> None:
    """Kill (or freeze) this process here if the point `name` is armed and this is its hit."""
    if not _armed or name not in _armed:
        return
    nth, sig = _armed[name]
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        fire = _hits[name] == nth
    if fire:
        os.kill(os.getpid(), sig)
        if sig == signal.SIGSTOP:
            # The stop lands on a thread as it next enters the kernel: without this sleep, the
            # thread that hit the point could run on past it (a check that makes no system call,
            # the next step's first instructions) before the whole process stops.
            time.sleep(0.2)


def armed() -> bool:
    return bool(_armed)
