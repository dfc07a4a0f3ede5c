"""The chaos suite's invariant checks, read from stored rows (through the CLI) and the engines,
once the daemon has settled. Each check returns the violations it found, as sentences.

- every execution final; every `error` (and `stopped`) with a reason, and none for a reason
  that is vh-orch's doing (an execution not resumed after a restart, an exception in its
  runner, outputs lost on the way back from a host);
- a `complete` one: every log line of its last attempt exactly once, in order, none after the
  final status; its metadata; its outputs exactly once with the right sha256, downloaded again;
- no live machine (fake, SSH) once idle machines are retired; nothing of the installation left
  on an SSH host (its claim, its folder); no container of the installation on any engine;
- a pipeline: final, every node final, each node try with at most one execution or task (and the
  node's row pointing at its last try's), a complete node's work complete, the pipeline's end
  agreeing with its nodes' (complete only when every node is);
- no execution started twice at once: containers from `docker events` (start/die per
  `vh-orch.execution-id` label, a background watcher per engine), commands of the process
  runtime from their own record (a lock file each attempt takes while it runs: a second
  attempt that finds it taken was started while the first one still ran); never more starts
  than attempts; no process of a killed attempt left running.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import VhOrch

FINAL = {"complete", "error", "stopped"}
LIVE_MACHINES = {"requested", "provisioning", "bootstrapping", "ready", "busy", "terminating"}


@dataclass(frozen=True)
class Expected:
    """What a complete execution of the workload must have left."""

    lines: int
    outputs: dict[str, str]  # name -> sha256

    def stdout(self, execution_id: int) -> list[str]:
        return [f"line {i}" for i in range(1, self.lines + 1)] + [json.dumps(self.metadata(execution_id))]

    def stderr(self) -> list[str]:
        return [f"err {i}" for i in range(1, self.lines + 1)]

    def metadata(self, execution_id: int) -> dict[str, int]:
        return {"chaos": execution_id, "lines": self.lines}


# -- containers: who ran when ---------------------------------------------------------------


@dataclass
class Interval:
    engine: str
    container: str
    execution: int
    start: float
    end: float | None = None  # None: still running when last seen


class ContainerWatch:
    """`docker events` for one installation on one engine, in a thread: start and die per container.
    A stream that breaks (the engine restarts) is reopened from the last event's time."""

    def __init__(self, engine: str, env: dict[str, str], cluster: str, since: float) -> None:
        self.engine, self.env, self.cluster, self.since = engine, env, cluster, since
        self.intervals: dict[str, Interval] = {}
        self._seen: set[tuple[str, str, int]] = set()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._watch, name=f"events-{engine}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._proc is not None:
            self._proc.terminate()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            self._proc = subprocess.Popen(
                ["docker", "events", "--since", f"{self.since:.9f}", "--filter", "type=container",
                 "--filter", f"label=vh-orch.cluster={self.cluster}", "--format", "{{json .}}"],
                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                self._event(json.loads(line))
            self._proc.wait()
            self._stopping.wait(0.2)

    def _event(self, event: dict[str, Any]) -> None:
        key = (event.get("id", ""), event.get("Action", ""), int(event.get("timeNano", 0)))
        if key in self._seen:
            return
        self._seen.add(key)
        at = key[2] / 1e9
        self.since = max(self.since, at)
        label = event.get("Actor", {}).get("Attributes", {}).get("vh-orch.execution-id", "")
        if key[1] == "start" and label.isdigit():
            self.intervals[key[0]] = Interval(self.engine, key[0][:12], int(label), at)
        elif key[1] == "die" and key[0] in self.intervals:
            self.intervals[key[0]].end = at


def close_at_restarts(intervals: list[Interval], restarts: list[tuple[float, float]]) -> None:
    """A container that ran when its engine went down was dead by the time the engine was."""
    for interval in intervals:
        if interval.end is None:
            downs = [down for down, _ in restarts if down > interval.start]
            if downs:
                interval.end = min(downs)


def check_overlaps(intervals: list[Interval]) -> list[str]:
    by_execution: dict[int, list[Interval]] = defaultdict(list)
    for interval in intervals:
        by_execution[interval.execution].append(interval)
    found = []
    for execution_id, runs in sorted(by_execution.items()):
        runs.sort(key=lambda i: i.start)
        for earlier_index, earlier in enumerate(runs):
            for later in runs[earlier_index + 1:]:
                if earlier.end is None or later.start < earlier.end:
                    found.append(f"execution {execution_id} ran twice at once: container {earlier.container} on "
                                 f"the {earlier.engine} engine ({_span(earlier)}) and {later.container} on the "
                                 f"{later.engine} engine ({_span(later)})")
    return found


def _span(interval: Interval) -> str:
    end = "still running" if interval.end is None else f"{interval.end:.3f}"
    return f"{interval.start:.3f} to {end}"


# -- processes of the process runtime ----------------------------------------------------------


def read_traces(folder: Path) -> dict[int, list[tuple[str, int, float]]]:
    """Per execution: ("start" | "end", pid, time) lines the workload's commands wrote."""
    traces: dict[int, list[tuple[str, int, float]]] = {}
    for path in folder.glob("*.trace"):
        rows = [line.split() for line in path.read_text().splitlines()]
        traces[int(path.stem)] = [(r[0], int(r[1]), float(r[2])) for r in rows if len(r) == 3]
    return traces


def check_processes(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.glob("*.overlap")):
        found.append(f"execution {path.stem} ran twice at once (process runtime): an attempt started while "
                     f"an earlier one still held its lock: {path.read_text().strip()}")
    for execution_id, rows in sorted(read_traces(folder).items()):
        ended = {pid for kind, pid, _ in rows if kind == "end"}
        for kind, pid, _ in rows:
            if kind == "start" and pid not in ended and _alive(pid):
                found.append(f"execution {execution_id}: the command of an ended attempt (pid {pid}) still runs")
    return found


def _alive(pid: int) -> bool:
    try:
        return "chaos.sh" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def check_starts(infos: dict[int, dict[str, Any]], intervals: list[Interval], folder: Path) -> list[str]:
    """An attempt starts its command at most once."""
    starts = Counter(i.execution for i in intervals)
    for execution_id, rows in read_traces(folder).items():
        starts[execution_id] += sum(1 for kind, _, _ in rows if kind == "start")
    return [f"execution {eid}: its command started {n} times in {infos[eid]['attempt']} attempt(s)"
            for eid, n in sorted(starts.items()) if eid in infos and n > infos[eid]["attempt"]]


# -- stored rows -----------------------------------------------------------------------------


def check_final(infos: dict[int, dict[str, Any]]) -> list[str]:
    found = []
    for eid, info in sorted(infos.items()):
        if info["status"] not in FINAL:
            found.append(f"execution {eid} never ended: still {info['status']} (attempt {info['attempt']}, "
                         f"machine {info['machine']})")
        elif info["status"] != "complete" and not info["status_reason"]:
            found.append(f"execution {eid} ended {info['status']} without a reason")
    return found


# Reasons that are never the workload's own doing in these runs (its legitimate ends: an exit
# code, a full disk, a machine lost on its last attempt, the daemon's SIGTERM):
FLAGGED = {
    # What a restarted daemon says of an execution it did not resume. Only `local` executions may
    # end so (README, "The daemon"): those on fake machines are requeued, those on SSH hosts
    # re-attached (invariant 2, no lost work).
    "vh-orch lost track of this execution": "was not requeued or re-attached after a daemon restart",
    "the vh-orch daemon stopped while this execution ran": "was not requeued or re-attached after a daemon restart",
    # An exception in vh-orch's runner: a bug.
    "vh-orch failed while running it": "failed inside vh-orch",
    # Bringing the outputs back from an SSH host failed: in these runs the local disk never fills,
    # so the outputs were lost on the way (a cut connection not tried again, a folder removed).
    "collecting outputs failed": "lost its outputs on the way back from its host",
}


LOCAL_MAY = ("vh-orch lost track of this execution", "the vh-orch daemon stopped while this execution ran")


def check_reasons(infos: dict[int, dict[str, Any]]) -> list[str]:
    found = []
    for eid, info in sorted(infos.items()):
        reason = info["status_reason"] or ""
        if info["environment"] == "local" and reason.startswith(LOCAL_MAY):
            continue
        for prefix, what in FLAGGED.items():
            if reason.startswith(prefix):
                found.append(f"execution {eid} on {info['environment']} {what} (attempt {info['attempt']}): "
                             f"{info['status']}, {reason!r}")
    return found


def check_pipeline(db: Path, info: dict[str, Any], infos: dict[int, dict[str, Any]]) -> list[str]:
    """A pipeline's invariants, from `pipeline info` and its rows (read-only)."""
    pid = info["id"]
    found = []
    if info["status"] not in FINAL:
        found.append(f"pipeline {pid} never ended: still {info['status']}")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tries = conn.execute(
            "SELECT n.name, w.attempt, COUNT(*) FROM pipeline_node n JOIN ("
            " SELECT pipeline_node_id AS node, pipeline_attempt AS attempt FROM execution"
            " WHERE pipeline_node_id IS NOT NULL UNION ALL"
            " SELECT pipeline_node_id, pipeline_attempt FROM task WHERE pipeline_node_id IS NOT NULL"
            ") w ON w.node = n.id WHERE n.pipeline_id = ? GROUP BY n.id, w.attempt", (pid,)).fetchall()
        rows = {name: (attempt, execution) for name, attempt, execution in conn.execute(
            "SELECT name, attempt, execution_id FROM pipeline_node WHERE pipeline_id = ?", (pid,))}
        made = {(name, attempt): execution for name, attempt, execution in conn.execute(
            "SELECT n.name, x.pipeline_attempt, x.id FROM execution x JOIN pipeline_node n"
            " ON n.id = x.pipeline_node_id WHERE n.pipeline_id = ?", (pid,))}
    found += [f"pipeline {pid}: node {name} try {attempt} has {n} executions/tasks" for name, attempt, n in tries
              if n > 1]
    for node in info["nodes"]:
        where = f"pipeline {pid}: node {node['name']}"
        if info["status"] in FINAL and node["status"] not in ("complete", "error", "stopped", "skipped"):
            found.append(f"{where} is still {node['status']} in a pipeline that ended {info['status']}")
        attempt, execution = rows[node["name"]]
        if execution is not None and made.get((node["name"], attempt)) != execution:
            found.append(f"{where}: its row points at execution {execution}, not at its try {attempt}'s")
        if node["status"] == "complete" and execution is not None \
                and infos.get(execution, {}).get("status") != "complete":
            found.append(f"{where} is complete but its execution {execution} is not")
    complete = all(n["status"] == "complete" for n in info["nodes"])
    if (info["status"] == "complete") != complete and info["status"] in FINAL:
        found.append(f"pipeline {pid} ended {info['status']} while its nodes are "
                     + ", ".join(f"{n['name']} {n['status']}" for n in info["nodes"]))
    return found


def check_complete(vh: VhOrch, info: dict[str, Any], expected: Expected, download: Path) -> list[str]:
    eid = info["id"]
    events = [json.loads(line) for line in vh("exec", "logs", str(eid), "--json").stdout.splitlines()]
    found = _check_log(eid, events, expected)
    if info["metadata_latest"] != expected.metadata(eid):
        found.append(f"execution {eid}: metadata {info['metadata_latest']} instead of {expected.metadata(eid)}")
    names = Counter(o["name"] for o in info["outputs"])
    if names != Counter(list(expected.outputs)):
        found.append(f"execution {eid}: outputs {sorted(names.elements())} instead of {sorted(expected.outputs)}")
    for output in info["outputs"]:
        if output["sha256"] != expected.outputs.get(output["name"], output["sha256"]):
            found.append(f"execution {eid}: output {output['name']} recorded with a wrong sha256")
    vh("exec", "outputs", str(eid), "--download", str(download))
    for name, digest in expected.outputs.items():
        path = download / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            got = "with wrong bytes" if path.exists() else "as nothing"
            found.append(f"execution {eid}: output {name} downloads {got}")
    return found


def _check_log(eid: int, events: list[dict[str, Any]], expected: Expected) -> list[str]:
    starts = [i for i, e in enumerate(events) if e["kind"] == "status" and e["text"].split(":")[0] == "started"]
    if not starts:
        return [f"execution {eid}: complete, but its log has no `started` event"]
    final = max(i for i, e in enumerate(events) if e["kind"] == "status")
    found = []
    late = [e for e in events[final + 1:] if e["kind"] == "log"]
    if late:
        found.append(f"execution {eid}: {len(late)} log line(s) stored after its final status, "
                     f"e.g. {late[0]['text']!r}")
    attempt = [e for e in events[starts[-1] + 1:final] if e["kind"] == "log"]
    for stream, want in (("stdout", expected.stdout(eid)), ("stderr", expected.stderr())):
        got = [e["text"] for e in attempt if e["stream"] == stream]
        if got != want:
            found.append(f"execution {eid}: {stream} of its last attempt {_diff(got, want)}")
    return found


def _diff(got: list[str], want: list[str]) -> str:
    doubled = sorted((t for t, n in Counter(got).items() if n > 1), key=got.index)
    missing = [t for t in want if t not in got]
    first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    return (f"has {len(got)} lines instead of {len(want)}; first difference at line {first + 1} "
            f"({got[first] if first < len(got) else 'nothing'!r} instead of "
            f"{want[first] if first < len(want) else 'nothing'!r}); repeated: {doubled[:5]}; missing: {missing[:5]}")


def live_machines(vh: VhOrch, clouds: set[str]) -> list[dict[str, Any]]:
    envs = {row["environment"]: row["cloud"] for row in vh.json("status")}
    return [m for m in vh.json("machine", "list", "--all")
            if envs.get(m["environment"]) in clouds and m["state"] in LIVE_MACHINES]


def check_machines(vh: VhOrch, clouds: set[str]) -> list[str]:
    found = [f"machine {m['id']} ({m['environment']}, {m['instance_id']}) is still {m['state']}: {m['reason']}"
             for m in live_machines(vh, clouds)]
    for row in vh.json("status"):
        if row["cloud"] in clouds and row["machines"]:
            found.append(f"`vh-orch status` still counts machines in {row['environment']}: {row['machines']}")
    return found


def check_hosts(workdirs: list[Path], cluster: str) -> list[str]:
    found = []
    for workdir in workdirs:
        for left in (workdir / "held", workdir / cluster):
            if left.exists():
                found.append(f"{left} is left on an SSH host after its machine was released")
    return found


def containers(env: dict[str, str], cluster: str, running: bool = False) -> list[str]:
    """The installation's containers on one engine: name (status)."""
    out = subprocess.run(["docker", "ps", *([] if running else ["-a"]), "--filter", f"label=vh-orch.cluster={cluster}",
                          "--format", "{{.Names}} ({{.Status}})"], env=env, capture_output=True, text=True,
                         timeout=60).stdout
    return out.splitlines()


def wait_no_containers(engines: dict[str, dict[str, str]], cluster: str, timeout: float) -> list[str]:
    """Containers a killed daemon left are swept by the next one (at start, then every 30 s)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [f"container {c} is left on the {name} engine" for name, env in engines.items()
                for c in containers(env, cluster)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(2)


def remove_containers(env: dict[str, str], cluster: str) -> None:
    """After the checks: whatever a failed run left of its installation goes (only its own)."""
    subprocess.run(f"docker ps -aq --filter label=vh-orch.cluster={cluster} | xargs -r docker rm -f",
                   shell=True, env=env, capture_output=True, timeout=60)
