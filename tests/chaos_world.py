"""The chaos suite's world: what outlives one run.

- three sshd hosts on their own loopback addresses (never 127.0.0.2/3, the session pool's):
  `plain` (127.0.0.10), `cut` (127.0.0.11, reached only through a TCP proxy on 127.0.0.13:22
  that cuts connections on demand) and `engine` (127.0.0.12, whose sessions talk to a second
  Docker engine through `SetEnv DOCKER_HOST=...`, so that engine can be restarted mid-run
  without disturbing anything else on this machine);
- that second engine (`Engine`): its own socket, data root, exec root (so its own
  containerd), cgroup parent and bridge. Never `--bridge none`: dockerd then deletes the
  host's `docker0`, which the main engine needs;
- small tmpfs mounts, the full disks (`mount_tmpfs`).

One world at a time on a machine: `World.start()` takes an exclusive lock on
/run/vh-chaos.lock (two sessions would fight over the addresses and the engine).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import sshhosts
from chaos_faults import TcpProxy

RUN = Path("/run/vh-chaos")
LOCK = Path("/run/vh-chaos.lock")
LOCK_WAIT_S = 1200
ENGINE_SOCKET = f"unix://{RUN}/docker.sock"
ENGINE_DATA = Path("/var/lib/vh-chaos-docker")
BRIDGE, BRIDGE_ADDRESS = "vhchaos0", "172.31.254.1/24"
IMAGE = "vh-orch/busybox:test"
HOST_NUMBERS = {"plain": 10, "cut": 11, "engine": 12}
PROXY_ADDRESS = ("127.0.0.13", 22)
ENGINE_WAIT_S = 60


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)


class Engine:
    """A second dockerd, for one SSH host. `restart()` is the fault: a systemctl restart."""

    def __init__(self) -> None:
        self.env = dict(os.environ, DOCKER_HOST=ENGINE_SOCKET)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = RUN / "dockerd.log"
        # (went down, came back) wall times: every container it ran was dead by `went down`.
        self.restarts: list[tuple[float, float]] = []

    def answers(self) -> bool:
        try:
            return _run("docker", "info", "--format", "{{.ServerVersion}}", env=self.env, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self) -> None:
        """Start it (replacing one a crashed session left), with the test image loaded."""
        self._stop_leftover()
        self._ensure_bridge()
        RUN.mkdir(parents=True, exist_ok=True)
        self._launch()
        if _run("docker", "image", "inspect", IMAGE, env=self.env).returncode != 0:
            subprocess.run(f"docker save {IMAGE} | DOCKER_HOST={ENGINE_SOCKET} docker load", shell=True,
                           check=True, capture_output=True, timeout=120)

    def _launch(self) -> None:
        self.process = subprocess.Popen(
            ["dockerd", "--host", ENGINE_SOCKET, "--data-root", str(ENGINE_DATA), "--exec-root", str(RUN / "exec"),
             "--pidfile", str(RUN / "docker.pid"), "--bridge", BRIDGE, "--iptables=false", "--ip-masq=false",
             "--ip-forward=false", "--cgroup-parent", "/vh-chaos"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), start_new_session=True)
        deadline = time.monotonic() + ENGINE_WAIT_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the second dockerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> float:
        """SIGTERM (it stops its containers first), then wait; returns when it was gone."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(ENGINE_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            self.process = None
        return time.time()

    def restart(self) -> None:
        down = self.stop()
        self._launch()
        self.restarts.append((down, time.time()))

    def _stop_leftover(self) -> None:
        """The dockerd of a session that died without stopping it: only if the pid file's process
        is that dockerd (a stale file's pid may belong to anything by now)."""
        try:
            pid = int((RUN / "docker.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if not cmdline or not cmdline[0].endswith(b"dockerd") or ENGINE_SOCKET.encode() not in cmdline:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + ENGINE_WAIT_S
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)

    @staticmethod
    def _ensure_bridge() -> None:
        if _run("ip", "link", "show", BRIDGE).returncode == 0:
            return
        for args in (["link", "add", BRIDGE, "type", "bridge"], ["addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE],
                     ["link", "set", BRIDGE, "up"]):
            _run("ip", *args).check_returncode()


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def mount_tmpfs(folder: Path, size_mb: int) -> None:
    """A small disk of its own at folder (it fills up for real)."""
    folder.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)).check_returncode()


def unmount(folder: Path) -> None:
    if _run("umount", str(folder)).returncode != 0:
        _run("umount", "-l", str(folder))


@dataclass
class World:
    root: Path
    hosts: dict[str, sshhosts.SSHHost] = field(default_factory=dict)
    client_key: Path | None = None
    proxy: TcpProxy | None = None
    engine: Engine | None = None
    notes: list[str] = field(default_factory=list)  # what could not be set up here, and why
    _lock: int | None = None

    def start(self) -> None:
        self._take_lock()
        self.root.mkdir(parents=True, exist_ok=True)
        self.client_key = self.root / "client_key"
        public = sshhosts.keygen(self.client_key, "vh-orch-chaos")
        self._start_engine()
        for role, n in HOST_NUMBERS.items():
            host = sshhosts.make_host(self.root, n)
            extra = f"SetEnv DOCKER_HOST={ENGINE_SOCKET}\n" if role == "engine" and self.engine else ""
            host.start(public, extra_config=extra)
            self.hosts[role] = host
        cut = self.hosts["cut"]
        self.proxy = TcpProxy(PROXY_ADDRESS, (cut.address, cut.port))
        self.proxy.start()

    def _start_engine(self) -> None:
        if shutil.which("dockerd") is None:
            self.notes.append("no dockerd here: the `engine` host uses the main engine, never restarted")
            return
        engine = Engine()
        try:
            engine.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            self.notes.append(f"a second Docker engine could not run here ({exc}); the `engine` host uses the "
                              "main engine, never restarted")
            engine.stop()
            return
        self.engine = engine

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for host in self.hosts.values():
            host.stop()
        if self.engine is not None:
            self.engine.stop()
            _run("ip", "link", "del", BRIDGE)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _take_lock(self) -> None:
        fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(f"another chaos world holds {LOCK}") from None
                time.sleep(1)

    def engines(self) -> dict[str, dict[str, str]]:
        """Every Docker engine the runs use: name -> environment for the docker CLI."""
        engines = {"main": {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}}
        if self.engine is not None:
            engines["second"] = self.engine.env
        return engines

    def host_entry(self, role: str, workdir: Path) -> dict[str, object]:
        """The pool's view of a host: the `cut` host is reached through the proxy (its key stays sshd's)."""
        host = self.hosts[role]
        address, port = (PROXY_ADDRESS if role == "cut" else (host.address, host.port))
        return {"address": address, "port": port, "host_key": host.host_key, "workdir": str(workdir)}
