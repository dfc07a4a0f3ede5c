"""How a command runs on a machine: in a Docker container, or as a plain process.

Both keep the in-execution contract: the execution's folder holds repository/,
inputs/, outputs/ and config/, and VH_*_DIR variables say where the command sees them.
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from vh_orch import failpoints
from vh_orch.bootstrap.isolation import Isolation, MountRefused, check_mount_source, gpu_environment, isolation_args
from vh_orch.bootstrap.oom import OomKills, killed_for_memory, oom_kills
from vh_orch.bootstrap.registry_login import PullFailed, RegistryAuth, pull_here
from vh_orch.bootstrap.usage import Probe

log = logging.getLogger(__name__)

CONTAINER_ROOT = "/valohai"
FOLDERS = ("repository", "inputs", "outputs", "config")
PULL_POLICIES = ("if-missing", "always", "never")
DOCKER_PROBE_TIMEOUT_S = 5
PULL_TIMEOUT_S = 3600
PID_FILE = ".vh-orch-pid"
# The process runtime's command waits for "go" on stdin, sent once its pid file is saved. A daemon
# killed before that closes the pipe: `read` meets the end and the command never runs.
GATE = 'IFS= read -r vh_orch_go && [ "$vh_orch_go" = go ] || exit 111; exec </dev/null; exec sh -c "$1"'
# What a command's output pipe holds (Linux; 64 KiB by default): a chatty command and the reader
# that stores its lines then trade big reads instead of waking each other every 64 KiB.
PIPE_BYTES = 1 << 20


def widen_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (AttributeError, OSError):  # not Linux, or above the system's limit: the default will do
        pass


class RuntimeFailure(Exception):
    """The runtime could not start the command; the message is the execution's status reason."""


LABEL_CLUSTER = "vh-orch.cluster"
LABEL_EXECUTION = "vh-orch.execution-id"
LABEL_ATTEMPT = "vh-orch.attempt"
LABEL_LOCAL = "vh-orch.local"  # started by a daemon's local docker runtime, on its own host
# The exit code of a container whose exit status could not be known (it vanished).
VANISHED = -1
# `docker inspect`: how a container ended (status, exit code, and whether the kernel killed a process of it
# for memory: the engine's record of its cgroup's OOM kills).
STATE_FORMAT = "{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}"
ENGINE_WAIT_S = 300  # how long an engine that does not answer is waited for before a container counts as gone


def container_name(cluster_id: str, execution_id: int) -> str:
    """Every container vh-orch starts carries its installation's cluster id in its name (two
    installations on one engine number their executions alike) and its execution's id, not its
    attempt: the engine lets one container hold a name, so two attempts of one execution never
    run at once on an engine, whatever a replica that was paused past its lease does when it
    wakes. Its attempt is its label (LABEL_ATTEMPT); every command on a container is by its id,
    or checks that label first, so the runner of an earlier attempt never touches a later one's.

    The engine is the fence: a runner that checked its lease and was then paused may still go on
    to start its container; by then its successor's container holds the name (the start fails),
    or its successor, starting later, removes it first (clear_older)."""
    return f"{cluster_id}-exec-{execution_id}"


# `docker inspect`: a container's id and the attempt it runs.
ID_ATTEMPT_FORMAT = f'{{{{.Id}}}} {{{{index .Config.Labels "{LABEL_ATTEMPT}"}}}}'
STALE_ATTEMPT = "a later attempt of this execution holds its container name on this engine"
STALE_EXIT = 3  # clear_older_command's exit status when a later attempt holds the name
NAME_TRIES = 3  # a name taken again between the removal and the creation is cleared this many times


@dataclass(frozen=True)
class RunSpec:
    execution_id: int
    command: str
    folder: Path
    env: dict[str, str]
    cluster_id: str
    attempt: int = 1
    image: str | None = None
    pull_policy: str = "if-missing"
    labels: dict[str, str] = field(default_factory=dict)
    cache_key: str | None = None  # the commit's identity: remote machines cache its files by it
    # Files mounted read-only into the container: (path on the machine, path in the container); input cache entries.
    mounts: tuple[tuple[str, str], ...] = ()
    isolation: Isolation = field(default_factory=Isolation)  # how the container is confined
    # The project's secrets: in the command's environment, never in an argument (`ps` would show it).
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    # The image's private registry login, if one is stored for it (registry_login.py); never shown.
    registry_auth: RegistryAuth | None = field(default=None, repr=False)

    @property
    def container_name(self) -> str:
        return container_name(self.cluster_id, self.execution_id)

    def all_labels(self) -> dict[str, str]:
        """The labels that say whose container this is, then the caller's."""
        return {**self.labels, LABEL_CLUSTER: self.cluster_id, LABEL_EXECUTION: str(self.execution_id),
                LABEL_ATTEMPT: str(self.attempt)}


class RunningCommand(Protocol):
    stdout: IO[bytes]
    stderr: IO[bytes]
    # Once it has ended: whether the kernel killed it (or a process of its container) for want of memory.
    out_of_memory: bool
    # Its output has ended while its end is still being read (a remote container's state asked over SSH):
    # a silence then is not the command's (the no-output-timeout does not count it).
    output_ended: bool

    def poll(self) -> int | None:
        """The exit code once the command has ended, else None."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        ...

    def stop(self, grace_s: float) -> None:
        """Ask the command to end (SIGTERM), and kill it after grace_s seconds."""
        ...


class Runtime(Protocol):
    name: str

    def visible_dirs(self, folder: Path) -> dict[str, str]:
        """Where the command sees each of the execution's folders."""
        ...

    def prepare(self, spec: RunSpec) -> None:
        """Make sure the command can start (e.g. the image is present); RuntimeFailure if not."""
        ...

    def start(self, spec: RunSpec) -> RunningCommand:
        ...


# The folders the command may write to: outputs/ (the contract) and repository/, its working
# directory, where scripts often leave scratch files.
WRITABLE = ("outputs", "repository")


def open_to_image_user(folder: Path) -> None:
    """Let whichever user the image runs as (root or not) read the execution's folders and write to
    outputs/ and repository/. vh-orch's own files are private to its user (0700/0600); these stay out
    of other local users' reach all the same, inside that private home (on a machine, inside this
    installation's 0700 folder): a container sees its mounts, never the folders above them."""
    for name in FOLDERS:
        top = folder / name
        dir_mode = 0o777 if name in WRITABLE else 0o755
        for root, dirs, files in os.walk(top):
            os.chmod(root, dir_mode)
            for entry in files:
                path = os.path.join(root, entry)
                if os.path.islink(path):
                    continue
                mode = os.stat(path).st_mode & 0o7777
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))


def docker_available() -> tuple[bool, str]:
    """Whether a Docker engine answers, and a short explanation either way."""
    if shutil.which("docker") is None:
        return False, "no docker command on PATH"
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=DOCKER_PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return False, f"docker info did not answer within {DOCKER_PROBE_TIMEOUT_S} s"
    if proc.returncode != 0:
        return False, _last_line(proc.stderr) or "docker info failed"
    return True, f"Docker engine {proc.stdout.strip()} answered"


class ProcessRuntime:
    """The command under `sh -c` on this host, in the execution's folder.

    It runs with the daemon's environment, and the daemon's Python first on PATH so
    that `python` finds the same packages (valohai-utils) the daemon was installed with.
    """

    name = "process"

    def visible_dirs(self, folder: Path) -> dict[str, str]:
        return {name: str(folder / name) for name in FOLDERS}

    def prepare(self, spec: RunSpec) -> None:
        return None

    def start(self, spec: RunSpec) -> RunningCommand:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
        env.update(spec.env)
        env.update(spec.secret_env)
        env.update(gpu_environment(spec.isolation, container=False))
        before = oom_kills()  # the command inherits this process's cgroup
        proc = subprocess.Popen(
            ["sh", "-c", GATE, "sh", spec.command],
            cwd=spec.folder / "repository",
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so stop reaches every child
        )
        failpoints.hit("process-started")
        for pipe in (proc.stdout, proc.stderr):
            widen_pipe(pipe.fileno())  # type: ignore[union-attr]
        # A daemon that dies leaves the group running; the next one ends it through this file.
        # The command waits behind the gate until the file is saved: no handle, no command.
        pid_file = spec.folder / PID_FILE
        tmp = pid_file.with_suffix(".part")
        tmp.write_text(str(proc.pid))
        os.replace(tmp, pid_file)
        assert proc.stdin is not None
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        except OSError:
            pass  # it is gone already; poll() tells
        return _Process(proc, before)


@dataclass
class _Process:
    proc: subprocess.Popen[bytes]
    oom_kills_before: OomKills | None = None  # the kernel's OOM-kill counts when it started
    out_of_memory: bool = False
    output_ended: bool = False  # its end is read at once (poll)
    _ended: bool = False

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stderr(self) -> IO[bytes]:
        assert self.proc.stderr is not None
        return self.proc.stderr

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            self._ended_with(code)
        return code

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._ended_with(code)
        return code

    def _ended_with(self, code: int) -> None:
        if not self._ended:
            self._ended = True
            self.out_of_memory = killed_for_memory(code, self.oom_kills_before)

    def probe(self) -> Probe:
        """What its hardware use is read from (usage.py): its session, which every child it starts is in."""
        return Probe("session", str(self.proc.pid))

    def stop(self, grace_s: float) -> None:
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
        # Children that ignored SIGTERM and outlived the shell still hold the pipes.
        _signal_group(self.proc.pid, signal.SIGKILL)


def kill_leftover_process(folder: Path) -> None:
    """End the process group a dead daemon's execution left behind in `folder`."""
    try:
        pid = int((folder / PID_FILE).read_text())
    except (OSError, ValueError):
        return
    _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class DockerRuntime:
    """The command in a container named <cluster id>-exec-<id> (see container_name), created, then started
    attached, with the folders bind-mounted under /valohai."""

    name = "docker"

    def __init__(self) -> None:
        self._pull: threading.Thread | None = None
        self._pull_failure: RuntimeFailure | None = None

    def visible_dirs(self, folder: Path) -> dict[str, str]:
        return {name: f"{CONTAINER_ROOT}/{name}" for name in FOLDERS}

    def prepare(self, spec: RunSpec) -> None:
        """Check the image; a pull it needs begins in a thread of its own, while the runner places the
        inputs, and start() waits for it."""
        if not spec.image:
            raise RuntimeFailure("no image: set `image` in the step or pass --image")
        policy = spec.pull_policy
        if policy not in PULL_POLICIES:
            raise RuntimeFailure(f"unknown pull policy {policy!r}: use one of {', '.join(PULL_POLICIES)}")
        present = _image_present(spec.image)
        if policy == "never" and not present:
            raise RuntimeFailure(f"image {spec.image!r} is not on this host and the pull policy is `never`")
        if policy == "always" or not present:
            self._pull = threading.Thread(target=self._pull_image, args=(spec.image, spec.registry_auth), daemon=True,
                                          name=f"pull-{spec.container_name}")
            self._pull.start()

    def _pull_image(self, image: str, auth: RegistryAuth | None) -> None:
        try:
            pull_here(image, auth)
        except PullFailed as exc:
            self._pull_failure = RuntimeFailure(str(exc))

    def start(self, spec: RunSpec) -> RunningCommand:
        if self._pull is not None:
            self._pull.join(PULL_TIMEOUT_S + 60)
            self._pull = None
            if self._pull_failure is not None:
                raise self._pull_failure
        args = docker_run_args(spec, str(spec.folder), detach=False, labels={LABEL_LOCAL: "1"}, local=True)
        args[1] = "create"
        # The client dies with the thread that started it: a daemon killed while the client creates
        # or starts the container leaves nothing in flight for the next daemon to miss.
        orphan_guard = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        for _ in range(NAME_TRIES):
            # The name's holder now: a container an earlier start of this attempt left behind, or an
            # earlier attempt's (removed), or a later attempt's (this one is stale: it starts nothing).
            clear_older(spec.container_name, spec.attempt)
            made = subprocess.run([*orphan_guard, *args], capture_output=True, text=True, timeout=PULL_TIMEOUT_S,
                                  env={**os.environ, **spec.secret_env} if spec.secret_env else None)  # `-e NAME` reads them here
            if made.returncode == 0:
                break
            if "Conflict" not in made.stderr:
                raise RuntimeFailure(f"creating the container (image {spec.image!r}) failed: "
                                     f"{(made.stderr.strip().splitlines() or ['unknown error'])[-1]}")
        else:
            raise RuntimeFailure(f"the container name {spec.container_name} stayed taken")
        container_id = made.stdout.strip().splitlines()[-1]
        proc = subprocess.Popen(
            [*orphan_guard, "docker", "start", "--attach", container_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for pipe in (proc.stdout, proc.stderr):
            widen_pipe(pipe.fileno())  # type: ignore[union-attr]
        failpoints.hit("container-started")
        return _Container(proc, name=container_id, probe_name=spec.container_name)


@dataclass
class _Container(_Process):
    """An attached `docker run` (without --rm): its exit status (and whether the kernel killed something
    in it for memory) is the engine's word, read once the client ends; a container that is gone by then
    vanished behind vh-orch's back."""

    name: str = ""  # the container's id: every command on it goes by its id
    probe_name: str = ""  # its name, which the hardware sampler reads it by (usage.py keys readings by name)
    _code: int | None = None

    def probe(self) -> Probe:
        return Probe("container", self.probe_name or self.name)

    def poll(self) -> int | None:
        if self._code is None and self.proc.poll() is not None:
            self._code = self._settle()
        return self._code

    def wait(self, timeout: float | None = None) -> int:
        self.proc.wait(timeout)
        code = self.poll()
        assert code is not None
        return code

    def _settle(self) -> int:
        deadline = time.monotonic() + ENGINE_WAIT_S
        while True:
            try:
                state = subprocess.run(["docker", "inspect", "--format", STATE_FORMAT, self.name],
                                       capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                state = subprocess.CompletedProcess([], 1, "", "docker inspect did not answer")
            if state.returncode == 0 or "No such" in state.stderr or time.monotonic() > deadline:
                break
            time.sleep(1)  # the engine does not answer (restarting): the container's end is not known yet
        parts = state.stdout.split()
        if state.returncode != 0 or len(parts) != 3:
            return VANISHED
        if parts[0] not in ("exited", "dead"):
            # The client ended while the container runs on: nothing reads it any more.
            subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)
            return VANISHED
        remove_container(self.name)
        self.out_of_memory = parts[2] == "true"
        return int(parts[1])

    def stop(self, grace_s: float) -> None:
        """`docker stop` with the grace; an engine too busy to answer in time gets `docker rm -f`, and the
        client is ended last. A stop never fails the execution (it ends `stopped`, not `error`)."""
        try:
            subprocess.run(["docker", "stop", "-t", str(int(grace_s)), self.name], capture_output=True,
                           timeout=grace_s + 30)
        except subprocess.TimeoutExpired:
            log.warning("%s: docker stop did not answer within %g s; removing it", self.name, grace_s + 30)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            try:
                subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)
            except subprocess.TimeoutExpired:
                log.warning("%s: docker rm -f did not answer either; the next sweep removes it", self.name)
            self.proc.kill()


def docker_run_args(spec: RunSpec, host_folder: str, detach: bool, labels: dict[str, str],
                    local: bool = False) -> list[str]:
    """`docker run` for an execution: named, labelled (whose it is, and `labels`: where it runs),
    confined (isolation.py), its folders mounted under /valohai. The image's own user runs the
    command. local: host_folder is on this host (mount sources are looked at, not only named).
    RuntimeFailure for a mount that must never be made (the Docker socket)."""
    args = ["docker", "run", *(["-d"] if detach else []), "--init", "--pull", "never", "--name", spec.container_name]
    for key, value in {**spec.all_labels(), **labels}.items():
        args += ["--label", f"{key}={value}"]
    args += isolation_args(spec.isolation)
    try:
        for source in [f"{host_folder}/{name}" for name in FOLDERS] + [source for source, _ in spec.mounts]:
            check_mount_source(source, local)
    except MountRefused as exc:
        raise RuntimeFailure(str(exc)) from None
    for name in FOLDERS:
        args += ["-v", f"{host_folder}/{name}:{CONTAINER_ROOT}/{name}"]
    for source, target in spec.mounts:
        args += ["--mount", _csv(["type=bind", f"source={source}", f"target={target}", "readonly"])]
    args += ["-w", f"{CONTAINER_ROOT}/repository"]
    for key, value in {**spec.env, **gpu_environment(spec.isolation, container=True)}.items():
        args += ["-e", f"{key}={value}"]
    for key in spec.secret_env:  # the value from the docker client's own environment, not from its arguments
        args += ["-e", key]
    args += ["--entrypoint", "sh", str(spec.image), "-c", spec.command]
    return args


def _csv(fields: list[str]) -> str:
    """One CSV line, as `--mount` reads it: a comma or quote in a path stays part of the path."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def remove_container(name: str) -> None:
    """Remove a container by its id (or a name that only ever means one container)."""
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def clear_older_command(name: str, attempt: int) -> str:
    """Shell, run on this host or on a machine: make way for `attempt`'s container by removing the one
    holding `name` if it runs this attempt or an earlier one (by its id: never a container that took the
    name since); exit STALE_EXIT saying STALE_ATTEMPT if a later attempt holds it (this attempt's runner
    was taken over). Ends in `; `, so a command can follow."""
    return (f"old=$(docker inspect --format {shlex.quote(ID_ATTEMPT_FORMAT)} {shlex.quote(name)} 2>/dev/null) && "
            f"{{ set -- $old; if [ \"${{2:-0}}\" -gt {int(attempt)} ]; then echo {shlex.quote(STALE_ATTEMPT)} >&2; "
            f"exit {STALE_EXIT}; fi; docker rm -f \"$1\" >/dev/null 2>&1; }}; ")


def remove_attempt_command(name: str, attempt: int) -> str:
    """Shell: remove the container holding `name` only if it runs `attempt` (by its id). Ends in `; `."""
    return (f"old=$(docker inspect --format {shlex.quote(ID_ATTEMPT_FORMAT)} {shlex.quote(name)} 2>/dev/null) && "
            f"set -- $old && [ \"${{2:-0}}\" = {int(attempt)} ] && docker rm -f \"$1\" >/dev/null 2>&1; ")


def clear_older(name: str, attempt: int) -> None:
    """clear_older_command on this host's engine; RuntimeFailure(STALE_ATTEMPT) if a later attempt holds
    the name. An engine that does not answer shows in the creation that follows."""
    done = subprocess.run(["sh", "-c", clear_older_command(name, attempt)], capture_output=True, timeout=120)
    if done.returncode == STALE_EXIT:
        raise RuntimeFailure(STALE_ATTEMPT)


def remove_attempt(name: str, attempt: int) -> None:
    """remove_attempt_command on this host's engine."""
    subprocess.run(["sh", "-c", remove_attempt_command(name, attempt)], capture_output=True, timeout=120)


def local_containers(cluster_id: str) -> list[tuple[str, int, int]]:
    """This installation's containers that local runtimes started on this host's engine:
    (container id, execution id, attempt), running or not."""
    proc = subprocess.run(
        ["docker", "ps", "-a", "--no-trunc", "--filter", f"label={LABEL_CLUSTER}={cluster_id}",
         "--filter", f"label={LABEL_LOCAL}",
         "--format", f'{{{{.ID}}}} {{{{.Label "{LABEL_EXECUTION}"}}}} {{{{.Label "{LABEL_ATTEMPT}"}}}}'],
        capture_output=True, text=True, timeout=60,
    )
    found = []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            found.append((parts[0], int(parts[1]), int(parts[2])))
    return found


def _image_present(image: str) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, timeout=30)
    return proc.returncode == 0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
