"""What running commands use of their machine, read where they run: CPU time and memory from the
kernel's own accounting (a container's cgroup, a process session's /proc entries) and their GPUs'
use from nvidia-smi (gpus.USE_COMMAND).

A place (this host, or one remote machine) is read once per tick for every command running
there: on this host the files are read directly; on a remote machine one shell command over its
SSH connection reads them all. Both answers are parsed here, the same way. A container's cgroup
is found once, from its first process's /proc/PID/cgroup (cgroup v1 or v2), when it is first
seen. `docker stats` is not used: one call takes about 2 s (it waits for two samples of its own)
where reading a container's cgroup files costs about 0.1 ms.

Readings are cumulative (CPU seconds since the command started); usage.cpu_percent turns two of
them, or one and the command's start, into a percentage of one core.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vh_orch.bootstrap.gpus import USE_COMMAND, GPUUse, parse_use

if TYPE_CHECKING:
    from vh_orch.bootstrap.ssh import SSHTransport

CGROUP_ROOT = "/sys/fs/cgroup"
PROC = "/proc"
MAX_FILE_BYTES = 64 * 1024  # a cgroup or /proc file read is cut here (memory.stat is ~1 KiB)
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a remote machine's whole answer
COMMAND_TIMEOUT_S = 10.0  # docker inspect, nvidia-smi, a remote read
MAX_RESOLVE_WAIT = 16  # reads between two looks for a container whose cgroup was not found
# Docker's rule for container names: only these may be put on a remote command line unquoted.
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}")


@dataclass(frozen=True)
class Probe:
    """What to read for one running command: a container (`key`: its name) or a process session
    (`key`: its leader's pid; the process runtime starts every command in a session of its own)."""

    kind: str  # "container" or "session"
    key: str


@dataclass(frozen=True)
class Reading:
    """One command's use at one moment."""

    cpu_s: float  # CPU time all its processes used since it started (children that ended included)
    memory_bytes: int  # memory in use: resident memory (a container's, less page cache it can drop)
    since: float | None = None  # when it started, on the place's clock (None: not known)


@dataclass(frozen=True)
class PlaceReading:
    clock: float  # the place's clock (seconds since it booted, /proc/uptime) when it was read
    readings: dict[Probe, Reading]
    gpus: list[GPUUse] | None  # None: not asked, or nvidia-smi absent or failing


def cpu_percent(reading: Reading, clock: float, before: Reading | None, before_clock: float | None) -> float | None:
    """CPU use in percent of one core: since the reading before, or (the first time) since the
    command started. None when no time has passed to measure over."""
    if before is not None and before_clock is not None:
        used, spent = reading.cpu_s - before.cpu_s, clock - before_clock
    elif reading.since is not None:
        used, spent = reading.cpu_s, clock - reading.since
    else:
        return None
    if spent < 0.1 or used < 0:  # a counter that went back: another command behind the same name
        return None
    return round(used / spent * 100, 1)


# -- where a container's accounting lives ---------------------------------------------------------

@dataclass(frozen=True)
class CgroupFiles:
    cpu: str  # v2: cpu.stat (usage_usec); v1: cpuacct.usage (nanoseconds)
    memory: str  # v2: memory.current; v1: memory.usage_in_bytes
    memory_stat: str  # memory.stat: the page cache it may drop is left out
    v2: bool


def cgroup_files(proc_cgroup: str, root: str = CGROUP_ROOT) -> CgroupFiles | None:
    """A process's cgroup files from its /proc/PID/cgroup: cgroup v1's cpuacct and memory
    hierarchies when it has them, else the v2 (unified) one. None when neither is there."""
    v1: dict[str, str] = {}
    unified = None
    for line in proc_cgroup[:MAX_FILE_BYTES].splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/") or "\n" in path:
            continue
        if number == "0" and not controllers:
            unified = path
        for controller in controllers.split(","):
            if controller:
                v1[controller] = f"{root}/{controllers}{path.rstrip('/')}"  # mounted under its list: cpu,cpuacct
    if "cpuacct" in v1 and "memory" in v1:
        return CgroupFiles(f"{v1['cpuacct']}/cpuacct.usage", f"{v1['memory']}/memory.usage_in_bytes",
                           f"{v1['memory']}/memory.stat", v2=False)
    if unified is not None:
        base = f"{root}{unified.rstrip('/')}"
        return CgroupFiles(f"{base}/cpu.stat", f"{base}/memory.current", f"{base}/memory.stat", v2=True)
    return None


def _stat_value(text: str, key: str) -> int | None:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def cgroup_reading(files: CgroupFiles, cpu: str, memory: str, memory_stat: str, since: float | None) -> Reading | None:
    """A container's reading from its cgroup files' texts; None when one does not parse (it ended)."""
    if files.v2:
        usec = _stat_value(cpu, "usage_usec")
        cpu_s = None if usec is None else usec / 1e6
    else:
        cpu_s = int(cpu.strip()) / 1e9 if cpu.strip().isdigit() else None
    if cpu_s is None or not memory.strip().isdigit():
        return None
    cache = _stat_value(memory_stat, "inactive_file" if files.v2 else "total_inactive_file") or 0
    return Reading(cpu_s, max(0, int(memory.strip()) - cache), since)


def process_start(stat: str, ticks: int) -> float | None:
    """When a process started (seconds since boot) from its /proc/PID/stat."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) / ticks if len(fields) > 19 and fields[19].isdigit() else None


# -- process sessions (the process runtime, on this host) -------------------------------------------

def session_readings(stats: Sequence[str], sessions: set[int], ticks: int, page: int) -> dict[int, Reading]:
    """Each session's reading from the /proc/PID/stat texts of this host's processes: the CPU time
    of its live processes and of the children they waited for (a child's time moves to its parent
    when it ends, so the sum runs on), and their resident memory."""
    cpu: dict[int, int] = {}
    rss: dict[int, int] = {}
    since: dict[int, float] = {}
    alive: set[int] = set()
    for text in stats:
        pid, _, rest = text.partition(" ")
        fields = rest.rpartition(")")[2].split()  # the command's name, in parentheses, may hold anything
        if len(fields) < 22 or not fields[3].lstrip("-").isdigit():
            continue
        session = int(fields[3])
        if session not in sessions:
            continue
        try:
            used = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            resident, start = int(fields[21]), int(fields[19])
        except ValueError:
            continue
        cpu[session] = cpu.get(session, 0) + used
        rss[session] = rss.get(session, 0) + resident
        if fields[0] not in ("Z", "X") and resident > 0:  # no memory: on its way out
            alive.add(session)
        if pid == str(session):
            since[session] = start / ticks
    # A session of only ending or ended processes (not reaped yet) is a command that has ended.
    return {s: Reading(cpu[s] / ticks, rss[s] * page, since.get(s)) for s in cpu if s in alive}


# -- one place's read: what to ask, and its answer ----------------------------------------------------

@dataclass(frozen=True)
class Ask:
    resolve: tuple[str, ...] = ()  # containers whose cgroup is not known yet
    files: tuple[str, ...] = ()
    sessions: tuple[int, ...] = ()
    gpus: bool = False


@dataclass
class Answer:
    clock: float
    cgroups: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # name: (/proc/PID/cgroup, start)
    files: dict[str, str] = field(default_factory=dict)
    sessions: dict[int, Reading] = field(default_factory=dict)
    gpus: str | None = None  # nvidia-smi's answer


Fetch = Callable[[Ask], Answer]


@dataclass(frozen=True)
class _Container:
    files: CgroupFiles
    since: float | None


class PlaceUsage:
    """Reads a place (this host: `local_fetch`; a remote machine: `RemoteFetch`) for all the commands
    running there, remembering where each container's cgroup is."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._containers: dict[str, _Container] = {}
        self._reads = 0
        self._misses: dict[str, tuple[int, int]] = {}  # a container not found yet: (misses, the read to try again)

    def read(self, probes: Sequence[Probe], gpus: bool) -> PlaceReading:
        self._reads += 1
        names = {p.key for p in probes if p.kind == "container" and CONTAINER_NAME.fullmatch(p.key)}
        for gone in set(self._containers) - names:
            del self._containers[gone]
        for gone in set(self._misses) - names:
            del self._misses[gone]
        sessions = tuple(int(p.key) for p in probes if p.kind == "session" and p.key.isdigit())
        unknown = tuple(sorted(n for n in names - set(self._containers)
                               if self._misses.get(n, (0, 0))[1] <= self._reads))
        if unknown:  # first seen: where its cgroup is (its files are read just after)
            found = self._fetch(Ask(resolve=unknown))
            for name in unknown:
                text, since = found.cgroups.get(name, ("", None))
                files = cgroup_files(text)
                if files is not None:
                    self._containers[name] = _Container(files, since)
                    self._misses.pop(name, None)
                else:  # not started yet, or its accounting is out of sight: asked again less and less often
                    misses = self._misses.get(name, (0, 0))[0] + 1
                    self._misses[name] = (misses, self._reads + min(2 ** (misses - 1), MAX_RESOLVE_WAIT))
        known = list(self._containers.items())
        paths = tuple(path for _, c in known for path in (c.files.cpu, c.files.memory, c.files.memory_stat))
        if not (paths or sessions or gpus):
            return PlaceReading(0.0, {}, None)
        answer = self._fetch(Ask(files=paths, sessions=sessions, gpus=gpus))
        readings: dict[Probe, Reading] = {}
        for name, c in known:
            cpu, memory, stat = (answer.files.get(path) for path in (c.files.cpu, c.files.memory, c.files.memory_stat))
            reading = None if cpu is None or memory is None or stat is None else \
                cgroup_reading(c.files, cpu, memory, stat, c.since)
            if reading is not None:
                readings[Probe("container", name)] = reading
        for session, reading in answer.sessions.items():
            readings[Probe("session", str(session))] = reading
        return PlaceReading(answer.clock, readings, None if answer.gpus is None else parse_use(answer.gpus))


def _read(path: str) -> str | None:
    # os.read rather than open(): half the cost, and a tick reads a few files per execution.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, MAX_FILE_BYTES).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _uptime(text: str | None) -> float:
    try:
        return float((text or "").split()[0])
    except (IndexError, ValueError):
        return 0.0


def local_fetch(ask: Ask) -> Answer:
    """An Ask answered on this host: files read directly, /proc scanned once for every session."""
    answer = Answer(clock=_uptime(_read(f"{PROC}/uptime")))
    ticks = os.sysconf("SC_CLK_TCK")
    if ask.resolve:
        out = _run(["docker", "inspect", "--format", "{{.Name}} {{.State.Pid}}", *ask.resolve])
        for line in (out or "").splitlines():
            name, _, pid = line.strip().lstrip("/").partition(" ")
            if pid.isdigit() and int(pid) > 0:
                text = _read(f"{PROC}/{pid}/cgroup")
                stat = _read(f"{PROC}/{pid}/stat")
                if text is not None:
                    answer.cgroups[name] = (text, None if stat is None else process_start(stat, ticks))
    for path in ask.files:
        text = _read(path)
        if text is not None:
            answer.files[path] = text
    if ask.sessions:
        stats = []
        for entry in os.listdir(PROC):
            if entry.isdigit():
                text = _read(f"{PROC}/{entry}/stat")
                if text is not None:
                    stats.append(text)
        answer.sessions = session_readings(stats, set(ask.sessions), ticks, os.sysconf("SC_PAGE_SIZE"))
    if ask.gpus:
        answer.gpus = _run(USE_COMMAND)
    return answer


def _run(args: list[str]) -> str | None:
    """A command's stdout; None when it is missing, fails or hangs (no GPU, no engine: no reading)."""
    try:
        proc = subprocess.run(args, capture_output=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    # docker inspect of several names prints those it found even when one is missing (exit 1).
    if proc.returncode != 0 and not (args[0] == "docker" and proc.stdout):
        return None
    return proc.stdout[:MAX_ANSWER_BYTES].decode("utf-8", "replace")


# On a remote machine: one shell command. $1 is 1 when GPUs are asked for; then `c:NAME` (a
# container to find: its first process's cgroup and start), `f:PATH` (a file to read). Sections
# of the answer start with a line `@...`; nothing in the files read starts with `@`.
REMOTE_SCRIPT = r"""g=$1; shift
printf '@clock %s\n' "$(cut -d' ' -f1 /proc/uptime)"
names=
for a in "$@"; do case $a in c:*) names="$names ${a#c:}" ;; esac; done
if [ -n "$names" ]; then
  printf '@tck %s\n' "$(getconf CLK_TCK 2>/dev/null || echo 100)"
  docker inspect --format '{{.Name}} {{.State.Pid}}' $names 2>/dev/null | while read -r n pid; do
    [ "${pid:-0}" -gt 0 ] 2>/dev/null || continue
    printf '@cgroup %s %s\n' "${n#/}" "$(sed 's/.*) //' /proc/$pid/stat 2>/dev/null | cut -d' ' -f20)"
    cat "/proc/$pid/cgroup" 2>/dev/null
  done
fi
for a in "$@"; do case $a in f:*) printf '@file %s\n' "${a#f:}"; head -c 65536 -- "${a#f:}" 2>/dev/null; echo ;; esac; done
if [ "$g" = 1 ]; then echo @gpus; USE 2>/dev/null; fi
true
""".replace("USE", " ".join(shlex.quote(a) for a in USE_COMMAND))


class RemoteFetch:
    """An Ask answered by a remote machine: one command over its (shared) SSH connection."""

    def __init__(self, transport: SSHTransport) -> None:
        self.transport = transport

    def __call__(self, ask: Ask) -> Answer:
        args = ["1" if ask.gpus else "0", *(f"c:{n}" for n in ask.resolve), *(f"f:{p}" for p in ask.files)]
        result = self.transport.run(f"sh -c {shlex.quote(REMOTE_SCRIPT)} sh " + " ".join(shlex.quote(a) for a in args),
                                    timeout=COMMAND_TIMEOUT_S)
        return parse_remote_answer(result.stdout[:MAX_ANSWER_BYTES])


def parse_remote_answer(text: str) -> Answer:
    """REMOTE_SCRIPT's answer: its sections (`@kind header`, then lines) read into an Answer."""
    sections: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("@"):
            kind, _, header = line[1:].partition(" ")
            sections.append((kind, header, []))
        elif sections:
            sections[-1][2].append(line)
    answer = Answer(clock=0.0)
    ticks = 100
    for kind, header, lines in sections:
        if kind == "clock":
            answer.clock = _uptime(header)
        elif kind == "tck" and header.strip().isdigit() and int(header) > 0:
            ticks = int(header)
        elif kind == "cgroup":
            name, _, start = header.partition(" ")
            answer.cgroups[name] = ("\n".join(lines), int(start) / ticks if start.strip().isdigit() else None)
        elif kind == "file":
            answer.files[header] = "\n".join(lines)
        elif kind == "gpus":
            answer.gpus = "\n".join(lines)
    return answer
