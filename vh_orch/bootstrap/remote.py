"""The docker runtime on a remote machine, over SSH.

The container starts detached (`vh-exec-<id>`, labelled), so it outlives an SSH
connection and the daemon itself. Its logs are followed with `docker logs -f
--timestamps`; when the connection is cut, or a new daemon re-attaches, following
resumes from the last line's timestamp and skips the lines it already has, so no line
is lost or repeated. The commit's files travel as one tarball per commit, cached on
the machine by hash.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import tarfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Callable
from typing import IO

from vh_orch.bootstrap.runtimes import CONTAINER_ROOT, FOLDERS, PULL_POLICIES, RunSpec, RuntimeFailure, docker_run_args
from vh_orch.bootstrap.ssh import SSHError, SSHTransport
from vh_orch.timeutil import parse_docker_time

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.2, 0.5, 1, 2, 5)
PULL_TIMEOUT_S = 3600
DOCKER_PULL = {"if-missing": "missing", "always": "always", "never": "never"}


STAMP = 26  # "2026-11-26T08:13:52.123456": docker's fixed-width timestamp, cut to microseconds


@dataclass
class ResumePoint:
    """Where a stream's passed-on lines end: the last line's time and the texts at exactly that time."""

    stamp: bytes | None = None  # the first STAMP bytes of docker's timestamp
    texts: Counter[bytes] = field(default_factory=Counter)

    @classmethod
    def at(cls, time: datetime | None, texts: list[str]) -> ResumePoint:
        if time is None:
            return cls()
        stamp = time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").encode()
        return cls(stamp, Counter(t.encode() for t in texts))


class RemoteDockerRuntime:
    name = "docker"

    def __init__(self, transport: SSHTransport, workdir: str, direct_data: bool = False) -> None:
        self.transport = transport
        self.workdir = workdir.rstrip("/")
        # A cloud VM moves inputs and outputs to and from the object store itself (signed URLs).
        self.direct_data = direct_data

    def remote_folder(self, spec: RunSpec) -> str:
        return f"{self.workdir}/executions/{spec.execution_id}"

    def visible_dirs(self, folder: Path) -> dict[str, str]:
        return {name: f"{CONTAINER_ROOT}/{name}" for name in FOLDERS}

    def _run(self, command: str, timeout: float = 120) -> str:
        try:
            result = self.transport.run(command, timeout=timeout)
        except SSHError as exc:
            raise RuntimeFailure(str(exc)) from None
        if result.code != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeFailure(f"on {self.transport.target.label}: `{command[:80]}` failed: {tail[0]}")
        return result.stdout

    def prepare(self, spec: RunSpec) -> None:
        """Put the commit's files, inputs and config in the execution's folder: one round trip
        when the commit's tarball is cached on the machine, two when it has to be sent first.

        The image is pulled by `docker run --pull` itself (see start())."""
        if not spec.image:
            raise RuntimeFailure("no image: set `image` in the step or pass --image")
        if spec.pull_policy not in PULL_POLICIES:
            raise RuntimeFailure(f"unknown pull policy {spec.pull_policy!r}")
        folder = shlex.quote(self.remote_folder(spec))
        commits = f"{self.workdir}/commits"
        cache = f"{commits}/{spec.cache_key or 'nocache-' + str(spec.execution_id)}.tar"
        bundle = io.BytesIO()
        with tarfile.open(fileobj=bundle, mode="w") as tar:
            for name in ("inputs", "config"):
                tar.add(str(spec.folder / name), arcname=name)
        dirs = " ".join(f"{folder}/{name}" for name in FOLDERS)
        script = (f"test -f {shlex.quote(cache)} || exit 86; rm -rf {folder} && mkdir -p {dirs} && "
                  f"tar -xf {shlex.quote(cache)} -C {folder}/repository && tar -xf - -C {folder}")
        for _ in range(2):
            try:
                result = self.transport.run(script, stdin=bundle.getvalue(), timeout=3600)
            except SSHError as exc:
                raise RuntimeFailure(str(exc)) from None
            if result.code != 86:
                break
            data = _tar_folder(spec.folder / "repository")  # not cached there yet: send it once
            tmp = f"{cache}.{spec.execution_id}.{uuid.uuid4().hex[:8]}.part"  # two runners may send it at once
            self._run(f"mkdir -p {shlex.quote(commits)}")
            self.transport.put_bytes(data, tmp)
            self._run(f"mv {shlex.quote(tmp)} {shlex.quote(cache)}")
        if result.code != 0:
            raise RuntimeFailure(f"placing files on {self.transport.target.label} failed: {result.stderr.strip()}")

    def start(self, spec: RunSpec) -> RemoteContainer:
        args = docker_run_args(spec, self.remote_folder(spec), detach=True)
        args[args.index("--pull") + 1] = DOCKER_PULL[spec.pull_policy]
        try:
            result = self.transport.run(" ".join(shlex.quote(a) for a in args), timeout=PULL_TIMEOUT_S)
        except SSHError as exc:
            raise RuntimeFailure(str(exc)) from None
        if result.code != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["unknown error"]
            raise RuntimeFailure(f"starting the container (image {spec.image!r}, pull policy {spec.pull_policy}) "
                                 f"failed: {tail[0]}")
        return RemoteContainer(self.transport, spec.container_name)

    def attach(self, spec: RunSpec, resume: dict[str, ResumePoint]) -> RemoteContainer | None:
        """Follow a container started earlier (by a daemon that died); None if it is gone."""
        state = self.transport.run(f"docker inspect --format '{{{{.State.Status}}}}' {spec.container_name}",
                                   timeout=60)
        if state.code != 0:
            return None
        return RemoteContainer(self.transport, spec.container_name, resume)

    def collect(self, spec: RunSpec) -> None:
        """Bring the outputs folder back into the local execution folder."""
        folder = shlex.quote(self.remote_folder(spec) + "/outputs")
        command = self.transport.start(f"tar -C {folder} -cf - .")
        dest = spec.folder / "outputs"
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=command.stdout, mode="r|") as tar:
            tar.extractall(dest, filter="data")
        if command.wait(600) != 0:
            raise RuntimeFailure(f"collecting outputs failed: {command.stderr.read().decode(errors='replace')}")

    def remote_path(self, spec: RunSpec, rel: str) -> str:
        return f"{self.remote_folder(spec)}/{rel}"

    def run_script(self, script: str, timeout: float = 3600) -> str:
        """Run a sh script (sent on stdin, so its size is not limited); its stdout, or RuntimeFailure."""
        try:
            result = self.transport.run("sh -s", stdin=script.encode(), timeout=timeout)
        except SSHError as exc:
            raise RuntimeFailure(str(exc)) from None
        if result.code != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeFailure(tail[0])
        return result.stdout

    def put_file(self, spec: RunSpec, rel: str, data: bytes) -> None:
        path = shlex.quote(self.remote_path(spec, rel))
        try:
            result = self.transport.run(f"cat > {path}.part && mv {path}.part {path}", stdin=data, timeout=120)
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
        try:
            self.transport.run(f"docker rm -f {spec.container_name} >/dev/null 2>&1; "
                               f"rm -rf {shlex.quote(self.remote_folder(spec))}", timeout=120)
        except SSHError as exc:
            log.warning("cleaning up execution %s on %s failed: %s", spec.execution_id,
                        self.transport.target.label, exc)


def _tar_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(str(entry), arcname=entry.name)
    return buf.getvalue()


class RemoteContainer:
    """A detached container, its logs pumped into local pipes, reconnecting as needed.

    stdout/stderr carry `<docker timestamp> <text>` lines (the ingester reads them with
    timestamped=True).
    """

    timestamped = True

    def __init__(self, transport: SSHTransport, name: str, resume: dict[str, ResumePoint] | None = None) -> None:
        self.transport = transport
        self.name = name
        self.resume = resume or {"stdout": ResumePoint(), "stderr": ResumePoint()}
        out_r, self._out_w = os.pipe()
        err_r, self._err_w = os.pipe()
        self.stdout: IO[bytes] = os.fdopen(out_r, "rb")
        self.stderr: IO[bytes] = os.fdopen(err_r, "rb")
        self._exit: int | None = None
        self._done = threading.Event()
        self._pump = threading.Thread(target=self._follow, name=f"logs-{name}", daemon=True)
        self._pump.start()

    def poll(self) -> int | None:
        return self._exit if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.name} did not end in time")
        return self._exit if self._exit is not None else -1

    def stop(self, grace_s: float) -> None:
        try:
            self.transport.run(f"docker stop -t {int(grace_s)} {self.name}", timeout=grace_s + 60)
        except SSHError as exc:
            log.warning("stopping %s failed: %s", self.name, exc)
        self._done.wait(grace_s + 60)

    # -- the pump -----------------------------------------------------------------

    def _follow(self) -> None:
        out = os.fdopen(self._out_w, "wb")
        err = os.fdopen(self._err_w, "wb")
        failures = 0
        try:
            while True:
                try:
                    self._follow_once(out, err)
                    status = self.transport.run(
                        f"docker inspect --format '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' {self.name}",
                        timeout=60)
                except (SSHError, OSError, EOFError) as exc:
                    failures += 1
                    delay = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S)) - 1]
                    log.info("%s: following logs broke (%s); resuming in %s s", self.name, exc, delay)
                    time.sleep(delay)
                    continue
                parts = status.stdout.split()
                if status.code != 0 or len(parts) != 2:
                    self._exit = -1  # the container vanished under us
                    return
                if parts[0] in ("running", "restarting", "paused", "created"):
                    failures += 1
                    time.sleep(RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S)) - 1])
                    continue  # the stream was cut while the container runs: resume
                self._exit = int(parts[1])
                return
        finally:
            out.close()
            err.close()
            self._done.set()

    def _follow_once(self, out: IO[bytes], err: IO[bytes]) -> None:
        stamps = [p.stamp for p in self.resume.values() if p.stamp is not None]
        since = f"--since {min(stamps).decode()}Z " if stamps else ""
        command = self.transport.start(f"docker logs -f --timestamps {since}{self.name}")
        channel = command.channel
        readers = [
            threading.Thread(target=self._copy, args=(channel.recv, out, self.resume["stdout"]), daemon=True),
            threading.Thread(target=self._copy, args=(channel.recv_stderr, err, self.resume["stderr"]),
                             daemon=True),
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        command.close()

    @staticmethod
    def _copy(recv: Callable[[int], bytes], sink: IO[bytes], point: ResumePoint) -> None:
        """Pass whole lines on in big chunks, skipping what was passed on (or stored) before this resume.

        Only lines at the resume boundary are looked at one by one; the rest moves as bytes.
        """
        resume = point.stamp
        skip = Counter(point.texts)
        pending = b""
        while True:
            try:
                data = recv(1 << 18)
            except (OSError, EOFError):
                data = b""
            if not data:
                return
            data = pending + data
            cut = data.rfind(b"\n") + 1
            pending, data = data[cut:], data[:cut]
            if not data:
                continue
            if resume is not None:
                kept = []
                for line in data.splitlines(keepends=True):
                    if resume is not None:
                        stamp = line[:STAMP]
                        if stamp < resume:
                            continue
                        if stamp == resume:
                            text = line.partition(b" ")[2].rstrip(b"\n")
                            if skip[text] > 0:
                                skip[text] -= 1
                                continue
                        else:
                            resume = None  # past the boundary: everything from here on is new
                    kept.append(line)
                data = b"".join(kept)
                if not data:
                    continue
            sink.write(data)
            sink.flush()
            _advance(point, data)


def _advance(point: ResumePoint, data: bytes) -> None:
    """Remember the last time passed on, and the texts passed on at exactly that time."""
    lines = data[-65536:].rstrip(b"\n").split(b"\n")
    last = lines[-1][:STAMP]
    if point.stamp != last:
        point.stamp = last
        point.texts = Counter()
    for line in reversed(lines):
        if line[:STAMP] != last:
            break
        point.texts[line.partition(b" ")[2]] += 1
