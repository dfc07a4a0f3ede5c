"""The docker runtime on a remote machine, over SSH.

The container is `<cluster id>-exec-<id>` (one name per execution: see runtimes.container_name),
labelled with its attempt and the cluster id. It is launched by a script that runs detached on the
host (remote_logs.py): created, attached with its output going to a file in the attempt's folder,
then started, so it outlives an SSH connection and the daemon itself, and never waits on either.
The daemon follows that file; a new daemon re-attaches by reading it again and skipping the lines
stored. The commit's files travel in the same stream as the inputs, cached on the machine by hash.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shlex
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from vh_orch import failpoints
from vh_orch.bootstrap.runtimes import (
    CONTAINER_ROOT,
    FOLDERS,
    ID_ATTEMPT_FORMAT,
    LABEL_ATTEMPT,
    LABEL_CLUSTER,
    LABEL_EXECUTION,
    NAME_TRIES,
    PULL_POLICIES,
    RunSpec,
    RuntimeFailure,
    clear_older_command,
    remove_attempt_command,
    docker_run_args,
)
from vh_orch.bootstrap.registry_login import (
    LOGIN_FAILED,
    is_authentication,
    login_and_pull_command,
    pull_failure,
)
from vh_orch.bootstrap.openssh import bulk_for
from vh_orch.bootstrap.remote_logs import RemoteContainer, launch_command
from vh_orch.bootstrap.ssh import RemoteCommand, SSHError, SSHTransport
from vh_orch.storage.input_cache import pin_name, quote_args

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.2, 0.5, 1, 2, 5)
PULL_TIMEOUT_S = 3600
PLACE_TIMEOUT_S = 600  # no progress for this long while placing files: the connection is dead
CHUNK = 1 << 20
ENGINE_WAIT_S = 600  # a host's engine that does not answer this long: its container's end is not known
# Containers of one installation on one machine (its workdir): a sweep or a release ends only these.
LABEL_WORKDIR = "vh-orch.workdir"
LABEL_MACHINE = "vh-orch.machine"
DOCKER_PULL = {"if-missing": "missing", "always": "always", "never": "never"}


class RemoteDockerRuntime:
    name = "docker"

    def __init__(self, transport: SSHTransport, workdir: str, direct_data: bool = False,
                 machine_id: int | None = None) -> None:
        self.transport = transport
        self._pulls: dict[str, threading.Thread] = {}  # container name → its image's pull, begun in prepare()
        self._pull_failures: dict[str, str] = {}  # container name → why its image's login-and-pull failed
        self.workdir = workdir.rstrip("/")
        self.machine_id = machine_id  # labels its containers: a sweep ends only this machine's
        # A cloud VM moves inputs and outputs to and from the object store itself (signed URLs).
        self.direct_data = direct_data

    def installation_folder(self, cluster_id: str) -> str:
        """Where this installation keeps execution folders on the machine: two installations
        that share a host (and even a workdir) never touch each other's files."""
        return f"{self.workdir}/{cluster_id}/executions"

    def remote_folder(self, spec: RunSpec) -> str:
        """One folder per attempt: an attempt requeued to the same machine never shares one."""
        return f"{self.installation_folder(spec.cluster_id)}/{spec.execution_id}-{spec.attempt}"

    def visible_dirs(self, folder: Path) -> dict[str, str]:
        return {name: f"{CONTAINER_ROOT}/{name}" for name in FOLDERS}

    def shell(self) -> SSHShell:
        return SSHShell(self.transport)

    def input_cache_root(self) -> str:
        """The machine's input cache: one per workdir, shared by the installations that use it (its
        entries are content-addressed)."""
        return f"{self.workdir}/input-cache"

    def prepare(self, spec: RunSpec) -> None:
        """Put the commit's files, inputs and config in the execution's folder, in one stream.

        The machine first says whether it has the commit's files cached; only then does
        the daemon send, streamed from disk: the inputs and config, and the commit's
        files when they are not cached (the machine caches them by the commit's hash).
        A broken connection is retried; anything the machine refuses (a full disk) is a
        RuntimeFailure with its reason. The image is pulled meanwhile, in a thread of its
        own (the runner places the inputs next): start() waits for it, and `docker run
        --pull` says what is wrong if the pull failed."""
        if not spec.image:
            raise RuntimeFailure("no image: set `image` in the step or pass --image")
        if spec.pull_policy not in PULL_POLICIES:
            raise RuntimeFailure(f"unknown pull policy {spec.pull_policy!r}")
        if spec.pull_policy != "never" and spec.registry_auth is not None:
            pull = threading.Thread(target=self._pull_with_login, args=(spec,), name=f"pull-{spec.container_name}",
                                    daemon=True)
            pull.start()
            self._pulls[spec.container_name] = pull
        elif spec.pull_policy != "never":
            pull = threading.Thread(target=pull_images, args=(self.transport, [spec.image], spec.pull_policy),
                                    name=f"pull-{spec.container_name}", daemon=True)
            pull.start()
            self._pulls[spec.container_name] = pull
        for attempt, delay in enumerate((*RECONNECT_BACKOFF_S[:3], None)):
            try:
                self._place(spec)
                return
            except SSHError as exc:
                if delay is None:
                    raise RuntimeFailure(f"placing files on {self.transport.target.label} failed: {exc}") from None
                log.info("placing files for execution %s broke (%s); retrying", spec.execution_id, exc)
                time.sleep(delay)

    def _place(self, spec: RunSpec) -> None:
        folder = self.remote_folder(spec)
        q = shlex.quote
        cache = f"{self.workdir}/commits/{spec.cache_key}.tar" if spec.cache_key else ""
        dirs = " ".join(q(f"{folder}/{name}") for name in FOLDERS)
        # This installation's folder is private to the SSH user: the outputs/ and repository/ that any
        # image user may write to (runtimes.open_to_image_user) are out of other local users' reach.
        private = q(f"{self.workdir}/{spec.cluster_id}")
        script = (
            f"set -e; F={q(folder)}; C={q(cache)}\n"
            f"rm -rf \"$F\"; mkdir -p {dirs}; chmod 700 {private}\n"
            'if [ -n "$C" ] && [ -f "$C" ]; then echo cached; '
            'tar -xf "$C" -C "$F/repository" || { rm -f "$C"; echo "the cached commit was unreadable" >&2; exit 1; }; '
            "else echo send; fi\n"
            'tar -xf - -C "$F"\n'
            'if [ -n "$C" ] && [ ! -f "$C" ]; then mkdir -p "${C%/*}"; '
            'tar -cf "$C.$$.part" -C "$F/repository" . && mv -f "$C.$$.part" "$C"; fi\n'
            'chmod 777 "$F/outputs" "$F/repository"\n'  # whatever the SSH user's umask made of them
            "echo placed\n"
        )
        command = self.transport.start(f"sh -c {q(script)}")
        try:
            command.channel.settimeout(PLACE_TIMEOUT_S)
            try:
                answer = command.stdout.readline().strip()
            except (OSError, EOFError) as exc:
                raise SSHError(f"{self.transport.target.label}: no answer while placing files: {exc}") from None
            if answer not in (b"cached", b"send"):
                raise self._refused(command, "placing files")
            try:
                self._send_bundle(command, spec, with_repository=answer == b"send")
            except (OSError, EOFError, paramiko.SSHException):
                # The machine stopped reading (tar failed: a full disk), or the connection broke.
                raise self._refused(command, "placing files") from None
            code = command.wait(PLACE_TIMEOUT_S)
            if code == -1:
                raise SSHError(f"{self.transport.target.label}: the connection broke while placing files")
            if code != 0:
                raise self._refused(command, "placing files")
        finally:
            command.close()

    def _refused(self, command: RemoteCommand, what: str) -> Exception:
        """Why the machine ended a command early: its stderr's last line, or a broken connection."""
        try:
            code = command.wait(30)
            tail = command.stderr.read().decode("utf-8", "replace").strip().splitlines()[-1:]
        except (OSError, EOFError, TimeoutError, paramiko.SSHException):
            code, tail = -1, []
        if code == -1:
            return SSHError(f"{self.transport.target.label}: the connection broke while {what}")
        return RuntimeFailure(f"{what} on {self.transport.target.label} failed: "
                              f"{tail[0] if tail else f'exit status {code}'}")

    @staticmethod
    def _send_bundle(command: RemoteCommand, spec: RunSpec, with_repository: bool) -> None:
        """A tar stream of inputs/, config/ (and repository/) read from disk as it is sent:
        memory stays bounded however large the inputs are."""
        sink = _ChannelWriter(command.channel)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
            if with_repository:
                tar.add(str(spec.folder / "repository"), arcname="repository")
            tar.add(str(spec.folder / "inputs"), arcname="inputs")  # its folders; input_cache places the files
            tar.add(str(spec.folder / "config"), arcname="config")
        command.channel.shutdown_write()

    def _pull_with_login(self, spec: RunSpec) -> None:
        """Pull a private registry's image on the machine, logged in for this pull only (registry_login.py)."""
        auth, image = spec.registry_auth, str(spec.image)
        assert auth is not None
        command = login_and_pull_command(auth, image)
        if spec.pull_policy == "if-missing":
            command = f"docker image inspect {shlex.quote(image)} >/dev/null 2>&1 || {command}"
        try:
            result = self.transport.run(command, stdin=auth.password.encode(), timeout=PULL_TIMEOUT_S)
        except SSHError as exc:
            self._pull_failures[spec.container_name] = f"pulling image {image!r} failed: {exc}"
            return
        if result.code != 0:
            self._pull_failures[spec.container_name] = pull_failure(image, result.stderr, auth,
                                                                    login_refused=result.code == LOGIN_FAILED)

    def start(self, spec: RunSpec) -> RemoteContainer:
        pull = self._pulls.pop(spec.container_name, None)
        if pull is not None:
            pull.join(PULL_TIMEOUT_S)
        failed = self._pull_failures.pop(spec.container_name, None)
        if failed is not None:
            raise RuntimeFailure(failed)
        labels = {LABEL_WORKDIR: self.workdir}
        if self.machine_id is not None:
            labels[LABEL_MACHINE] = str(self.machine_id)
        folder = self.remote_folder(spec)
        args = docker_run_args(spec, folder, detach=True, labels=labels)
        # A private image was pulled just now, logged in; `docker create` itself has no login to pull again with.
        args[args.index("--pull") + 1] = "never" if spec.registry_auth is not None else DOCKER_PULL[spec.pull_policy]
        args[1:3] = ["create"]  # created, attached by the relay, then started (remote_logs.py)
        # The name's holder first: what an earlier start of this attempt left behind, or an earlier
        # attempt's container (removed), or a later attempt's (this one is stale: it starts nothing;
        # runtimes.container_name). The image's marker says when vh-orch last used it on this machine
        # (tidy_images removes long unused ones).
        marker = f"{self.workdir}/images/{hashlib.sha256(str(spec.image).encode()).hexdigest()[:32]}"
        before = (clear_older_command(spec.container_name, spec.attempt) +
                  f"mkdir -p {shlex.quote(self.workdir)}/images && printf '%s\\n' {shlex.quote(str(spec.image))} > "
                  f"{shlex.quote(marker)}; ")
        command = launch_command(folder, args, before, secret_names=list(spec.secret_env))
        # The secrets' values go to the shell on its standard input, exported for `docker create -e NAME`:
        # never in the command line the machine's `ps` shows.
        stdin = None
        if spec.secret_env:
            exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in spec.secret_env.items())
            stdin, command = (exports + command + "\n").encode(), "sh -s"
        container_id = None
        conflicts = 0
        for delay in (*RECONNECT_BACKOFF_S[:3], None):
            try:
                result = self.transport.run(command, stdin=stdin, timeout=PULL_TIMEOUT_S)
            except SSHError as exc:
                # The connection broke: the launch goes on on the host all the same.
                container_id = self._container_of(spec.container_name, spec.attempt)
                if container_id is not None:
                    break
                if delay is None:
                    raise RuntimeFailure(str(exc)) from None
                time.sleep(delay)
                continue  # a second launch command only waits for the first one's word
            if result.code != 0:
                if "Conflict" in result.stderr and conflicts < NAME_TRIES:
                    conflicts += 1  # the name was taken again between the removal and the creation
                    continue
                # Docker says what is wrong first, then "See 'docker create --help'."
                said = [line.strip() for line in result.stderr.splitlines()
                        if line.strip() and "--help" not in line] or ["unknown error"]
                if is_authentication(said[-1]):
                    raise RuntimeFailure(pull_failure(str(spec.image), said[-1], None))
                raise RuntimeFailure(f"starting the container (image {spec.image!r}, pull policy "
                                     f"{spec.pull_policy}) failed: {said[-1]}")
            words = (result.stdout.strip().splitlines() or [""])[-1].split()
            container_id = words[-1] if words else None
            break
        failpoints.hit("container-started")
        return RemoteContainer(self.transport, container_id or spec.container_name, folder,
                               probe_name=spec.container_name)

    def tidy_images(self, unused_for_s: float, low_percent: float) -> list[str]:
        """When the disk of the machine's Docker engine has less than low_percent free, remove the
        images vh-orch ran there that no execution used for unused_for_s (images it never ran are
        not its to remove; an image a container still uses is refused by docker and stays).
        Returns the images removed."""
        out = self.run_script(TIDY_IMAGES, args=[self.workdir, str(max(0, int(unused_for_s // 60))),
                                                 str(int(low_percent))], timeout=600)
        return [line[len("REMOVED "):] for line in out.splitlines() if line.startswith("REMOVED ")]

    def _container_of(self, name: str, attempt: int) -> str | None:
        """The id of the container holding `name` if it runs `attempt`; None otherwise (or no answer)."""
        try:
            found = self.transport.run(f"docker inspect --format {shlex.quote(ID_ATTEMPT_FORMAT)} {name}", timeout=60)
        except SSHError:
            return None
        container_id, _, held = found.stdout.strip().partition(" ")
        return container_id if found.code == 0 and held == str(attempt) else None

    def attach(self, spec: RunSpec) -> RemoteContainer | None:
        """Follow a container launched earlier (by a daemon that died); None if it is gone (or the name
        is held by another attempt's container)."""
        for delay in (*RECONNECT_BACKOFF_S, None):
            try:
                found = self.transport.run(
                    f"docker inspect --format {shlex.quote(ID_ATTEMPT_FORMAT)} {spec.container_name}", timeout=60)
                break
            except SSHError as exc:
                if delay is None:
                    raise RuntimeFailure(f"cannot re-attach to its container: {exc}") from None
                time.sleep(delay)
        container_id, _, attempt = found.stdout.strip().partition(" ")
        if found.code != 0 or attempt != str(spec.attempt):
            return None
        # Its output is read again from the relay file's start: the ingester skips the lines stored.
        return RemoteContainer(self.transport, container_id, self.remote_folder(spec), probe_name=spec.container_name)

    def collect(self, spec: RunSpec) -> None:
        """Bring the outputs folder back into the local execution folder; a cut connection is
        retried from the start (into an emptied folder), what the machine refuses is a RuntimeFailure."""
        dest = spec.folder / "outputs"
        for delay in (*RECONNECT_BACKOFF_S[:3], None):
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            try:
                self._collect_once(spec, dest)
                return
            except (SSHError, OSError, EOFError, tarfile.TarError, paramiko.SSHException) as exc:
                if delay is None:
                    raise RuntimeFailure(f"collecting outputs from {self.transport.target.label} failed: {exc}") \
                        from None
                log.info("collecting outputs of execution %s broke (%s); retrying", spec.execution_id, exc)
                time.sleep(delay)

    def _collect_once(self, spec: RunSpec, dest: Path) -> None:
        folder = shlex.quote(self.remote_folder(spec) + "/outputs")
        command = self.transport.start(f"tar -C {folder} -cf - .")
        try:
            with tarfile.open(fileobj=command.stdout, mode="r|") as tar:
                tar.extractall(dest, filter="data")
            code = command.wait(600)
            if code == -1:
                raise SSHError("the connection broke while collecting outputs")
            if code != 0:
                said = command.stderr.read().decode(errors="replace").strip()
                raise RuntimeFailure(f"collecting outputs failed: {said or f'tar exited {code}'}")
        finally:
            command.close()

    def remote_path(self, spec: RunSpec, rel: str) -> str:
        return f"{self.remote_folder(spec)}/{rel}"

    def run_script(self, script: str, timeout: float = 3600, args: list[str] | None = None) -> str:
        """Run a sh script (sent on stdin, so its size is not limited) with args; its stdout, or RuntimeFailure."""
        try:
            command = "sh -s" + ("".join(f" {shlex.quote(a)}" for a in (["--", *args] if args else [])))
            result = self.transport.run(command, stdin=script.encode(), timeout=timeout)
        except SSHError as exc:
            raise RuntimeFailure(str(exc)) from None
        if result.code != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeFailure(tail[0])
        return result.stdout

    def put_file(self, spec: RunSpec, rel: str, data: bytes) -> None:
        path = shlex.quote(self.remote_path(spec, rel))
        try:
            result = self.transport.run(f"cat > {path}.part && chmod 644 {path}.part && mv {path}.part {path}",
                                        stdin=data, timeout=120)
        except SSHError as exc:
            raise RuntimeFailure(str(exc)) from None
        if result.code != 0:
            raise RuntimeFailure(f"writing {rel} on {self.transport.target.label} failed: {result.stderr.strip()}")

    def list_outputs(self, spec: RunSpec) -> tuple[list[tuple[str, int]], list[str]]:
        """The regular files under outputs/ (relative path, size), and the other entries (not stored)."""
        folder = shlex.quote(self.remote_path(spec, "outputs"))
        out = self.run_script(f"cd {folder} && find . -mindepth 1 \\( -type f -printf 'F %s %P\\0' \\) "
                              f"-o \\( ! -type d -printf 'X 0 %P\\0' \\)\n", timeout=600)
        files, others = [], []
        for record in out.split("\0"):
            if not record:
                continue
            kind, size, rel = record.split(" ", 2)
            if kind == "F":
                files.append((rel, int(size)))
            else:
                others.append(rel)
        return sorted(files), sorted(others)

    def cleanup(self, spec: RunSpec) -> None:
        """Remove the attempt's container and folder, and release the input cache entries it used (also
        after a re-attach, whose runner placed nothing itself)."""
        pin = shlex.quote(pin_name(spec.cluster_id, spec.execution_id, spec.attempt))
        try:
            self.transport.run(remove_attempt_command(spec.container_name, spec.attempt) +
                               f"rm -rf {shlex.quote(self.remote_folder(spec))}; "
                               f"rm -f {shlex.quote(self.input_cache_root())}/*/pins/{pin}", timeout=120)
        except SSHError as exc:
            log.warning("cleaning up execution %s on %s failed: %s", spec.execution_id,
                        self.transport.target.label, exc)

    def sweep(self, cluster_id: str, live: Callable[[], set[tuple[int, int]]]) -> list[int]:
        """End what this installation left on the machine for attempts that no longer run (a
        daemon killed after recording a result, before cleaning up, or an attempt requeued
        elsewhere): containers found by the cluster, workdir and machine labels, execution
        folders under the installation's folder. Only ever touches what carries cluster_id.
        `live` gives the (execution id, attempt) of every started execution; it is read after
        the machine was looked at, so an execution that starts meanwhile is never mistaken for
        a leftover. Returns the execution ids it cleaned up after."""
        folder = self.installation_folder(cluster_id)
        q = shlex.quote
        mine = f"--filter label={LABEL_CLUSTER}={q(cluster_id)} --filter label={q(LABEL_WORKDIR + '=' + self.workdir)}"
        if self.machine_id is not None:
            mine += f" --filter label={LABEL_MACHINE}={self.machine_id}"
        listing = self.transport.run(
            f"docker ps -a --no-trunc {mine} "
            f"--format '{{{{.ID}}}} {{{{.Label \"{LABEL_EXECUTION}\"}}}} {{{{.Label \"{LABEL_ATTEMPT}\"}}}}'; "
            f"echo vh-orch-folders; ls -1 {q(folder)} 2>/dev/null; true", timeout=60)
        head, _, tail = listing.stdout.partition("vh-orch-folders")
        containers = [line.split() for line in head.splitlines() if len(line.split()) == 3]
        folders = [name for name in tail.split() if _attempt_of(name) is not None]
        running = live()
        doomed = [(cid, eid) for cid, eid, attempt in containers if _attempt_of(f"{eid}-{attempt}") not in running]
        stale = [name for name in folders if _attempt_of(name) not in running]
        if not doomed and not stale:
            return []
        command = ""
        if doomed:
            command += "docker rm -f " + " ".join(q(cid) for cid, _ in doomed) + " >/dev/null 2>&1; "
        if stale:
            command += "rm -rf " + " ".join(q(f"{folder}/{name}") for name in stale) + "; "
            # The input cache entries those attempts used may be evicted again.
            command += "rm -f " + " ".join(f"{q(self.input_cache_root())}/*/pins/{q(f'{cluster_id}-{name}')}"
                                           for name in stale) + "; "
        self.transport.run(command + "true", timeout=120)
        return sorted({int(eid) for _, eid in doomed if eid.isdigit()} | {int(name.split("-")[0]) for name in stale})


# tidy_images: W (workdir), KEEP_MIN (minutes unused), LOW (percent free below which the disk is low)
TIDY_IMAGES = r"""W=$1 KEEP_MIN=$2 LOW=$3
root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null) || exit 0
free=$(df -P "$root" | awk 'NR == 2 {print int($4 * 100 / $2)}')
[ -n "$free" ] && [ "$free" -lt "$LOW" ] && [ -d "$W/images" ] || exit 0
find "$W/images" -type f -mmin +"$KEEP_MIN" | while read -r f; do
  image=$(cat "$f")
  [ -z "$(docker ps -a -q --filter ancestor="$image" 2>/dev/null)" ] || continue  # a container has it
  docker image rm -- "$image" >/dev/null 2>&1 && rm -f -- "$f" && echo "REMOVED $image"
done
true
"""


def pull_images(transport: SSHTransport, images: list[str], policy: str = "if-missing",
                timeout_s: float = PULL_TIMEOUT_S) -> list[str]:
    """Pull images on the machine (if-missing: only those it lacks; never: none). Returns the images
    that could not be pulled; a failure is logged, never raised (`docker run --pull` reports it)."""
    if policy == "never":
        return []
    failed = []
    for image in images:
        q = shlex.quote(image)
        command = f"docker pull -q {q} >/dev/null"
        if policy == "if-missing":
            command = f"docker image inspect {q} >/dev/null 2>&1 || {command}"
        try:
            result = transport.run(command, timeout=timeout_s)
            ok, said = result.code == 0, result.stderr.strip()
        except SSHError as exc:
            ok, said = False, str(exc)
        if not ok:
            failed.append(image)
            log.info("%s: pulling %s failed: %s", transport.target.label, image, said[-300:])
    return failed


def _attempt_of(name: str) -> tuple[int, int] | None:
    """(execution id, attempt) from `<id>-<attempt>` (a folder's name), or None."""
    eid, _, attempt = name.partition("-")
    return (int(eid), int(attempt)) if eid.isdigit() and attempt.isdigit() else None


class SSHShell:
    """Runs the input cache's scripts on the machine (input_cache.Shell)."""

    def __init__(self, transport: SSHTransport) -> None:
        self.transport = transport
        self.bulk = bulk_for(transport.target)  # large files: the OpenSSH client, where there is one

    def start(self, script: str, args: list[str]) -> _SSHCommand:
        return _SSHCommand(self.transport.start(quote_args(script, args)), self.transport.target.label)


class _SSHCommand:
    def __init__(self, command: RemoteCommand, label: str) -> None:
        self.command = command
        self.label = label
        command.channel.settimeout(PLACE_TIMEOUT_S)

    def readline(self) -> bytes:
        return self.command.stdout.readline()

    def send(self, data: bytes) -> None:
        self.command.channel.sendall(memoryview(data))  # see _ChannelWriter.write

    def end_input(self) -> None:
        self.command.channel.shutdown_write()

    def abort(self) -> None:
        self.command.close()

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            self.end_input()
            code = self.command.wait(timeout)
            said = self.command.stderr.read().decode("utf-8", "replace").strip().splitlines()[-1:]
        except (OSError, EOFError, TimeoutError, paramiko.SSHException):
            code, said = -1, []
        finally:
            self.command.close()
        if code == -1 and not said:
            said = [f"the connection to {self.label} broke"]
        return code, said[0] if said else ""


class _ChannelWriter(io.RawIOBase):
    """The write half of an SSH channel as a file, for tarfile's stream mode."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        # A memoryview: paramiko's sendall slices what is left after each packet (32 KiB), and slicing
        # bytes copies them: a 1 MiB chunk would be copied 32 times over.
        self.channel.sendall(memoryview(data))
        return len(data)
