"""Whether the kernel ended a plain process (the process runtime) for want of memory.

A process the OOM killer ends dies of SIGKILL, like one anybody killed with `kill -9`; what tells
them apart is the kernel's count of OOM kills: the memory cgroup's (`oom_kill` in cgroup v2's
memory.events, or v1's memory.oom_control) and the machine's (/proc/vmstat). The counts are read
before the command starts and after it ends: a command killed by SIGKILL while one of them rose
was, as far as anyone can tell, killed for memory. (A container needs none of this: the engine
records `OOMKilled` itself.)
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
KILLED_EXIT = 128 + signal.SIGKILL  # what a shell says of a child that died of SIGKILL


@dataclass(frozen=True)
class OomKills:
    """The kernel's counts of OOM kills at one moment; None where one cannot be read."""

    cgroup: int | None
    machine: int | None


def oom_kills() -> OomKills:
    """The counts now: of this process's memory cgroup (which the commands it starts inherit) and the machine's."""
    return OomKills(_read_count(_cgroup_events()), _read_count(Path("/proc/vmstat")))


def killed_for_memory(exit_code: int, before: OomKills | None) -> bool:
    """Whether a command that ended with exit_code (a Popen code: -9, or a shell's 137) was ended by the
    OOM killer: it died of SIGKILL and a count of OOM kills rose since `before`."""
    if before is None or exit_code not in (-signal.SIGKILL, KILLED_EXIT):
        return False
    after = oom_kills()
    return any(b is not None and a is not None and a > b
               for b, a in ((before.cgroup, after.cgroup), (before.machine, after.machine)))


def _cgroup_events() -> Path | None:
    """The file holding this process's memory cgroup's OOM-kill count (v1 memory.oom_control, else v2
    memory.events), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if "memory" in controllers.split(","):
            return CGROUP_ROOT / "memory" / path.lstrip("/") / "memory.oom_control"
        if controllers == "" and path:
            v2 = CGROUP_ROOT / path.lstrip("/") / "memory.events"
    return v2


def _read_count(path: Path | None) -> int | None:
    """The `oom_kill N` line of a kernel counter file, or None."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None
