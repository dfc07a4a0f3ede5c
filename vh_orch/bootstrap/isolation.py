"""What an execution's container may do: the same rules on every engine, this host's or a machine's over SSH.

A container runs with the image's own user, without gaining privileges (no setuid, no file
capabilities: `no-new-privileges`), with a bounded number of processes, without the
capabilities no ML workload needs, on the network its environment names, held to the
CPU and memory its step's `resources:` asks for, and with only the GPUs it was given. The
Docker socket is never mounted: a container that could reach it would control the engine, and
through it the machine.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

DEFAULT_PIDS_LIMIT = 4096
NETWORKS = ("bridge", "none")
DEFAULT_NETWORK = "bridge"
# Of Docker's default set, these go. What stays is what installing packages as root needs (pip, apt,
# conda: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETUID, SETGID, and SETPCAP for apt's sandbox user),
# KILL, and NET_BIND_SERVICE (a server on a low port inside the container hurts nobody).
DROPPED_CAPABILITIES = (
    "NET_RAW",  # raw sockets: forged packets and ARP/ICMP tricks on the shared bridge
    "MKNOD",  # device nodes: only the engine's device rules would stand between them and the host's disks
    "AUDIT_WRITE",  # writing to the host kernel's audit log
    "SETFCAP",  # granting file capabilities (apt falls back to setuid bits, which no-new-privileges defuses)
    "SYS_CHROOT",  # chroot, a common step of escapes; no training or build tool needs it
)
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
CPU_PERIOD_US = 100_000  # the CFS period `--cpus` uses
MIN_CPUS = 0.01  # one millisecond per period: the kernel's smallest quota
MIN_MEMORY_MB = 6  # Docker refuses a smaller memory limit
MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What a step's `resources:` holds its container to; None: no limit. Memory in MB (MiB, as Docker
    counts), CPUs in cores (0.5 is half of one)."""

    cpus: float | None = None
    memory_mb: float | None = None

    def __bool__(self) -> bool:
        return self.cpus is not None or self.memory_mb is not None


@dataclass(frozen=True)
class Isolation:
    """How one execution's container is confined: the environment's settings and the step's limits."""

    pids_limit: int = DEFAULT_PIDS_LIMIT  # 0: no limit
    network: str = DEFAULT_NETWORK
    limits: Limits = field(default_factory=Limits)
    gpus: tuple[int, ...] = ()  # the indices of the machine's GPUs it was given; (): none


class MountRefused(Exception):
    """A mount that would hand the container the machine (the Docker socket)."""


def isolation_args(isolation: Isolation) -> list[str]:
    """The `docker run` options that confine a container (the same for the local and the remote engine)."""
    args = ["--security-opt", "no-new-privileges"]
    for capability in DROPPED_CAPABILITIES:
        args += ["--cap-drop", capability]
    if isolation.pids_limit > 0:
        args += ["--pids-limit", str(isolation.pids_limit)]
    args += ["--network", isolation.network]
    limits = isolation.limits
    if limits.cpus is not None:
        # A quota rather than `--cpus`: Docker refuses `--cpus` above the machine's count, while a
        # step asking for more than the machine has should simply run unthrottled there.
        args += ["--cpu-period", str(CPU_PERIOD_US), "--cpu-quota", str(max(1000, round(limits.cpus * CPU_PERIOD_US)))]
    if limits.memory_mb is not None:
        memory = str(int(limits.memory_mb * MiB))
        # The same bound with swap: a limit that could spill into swap does not hold.
        args += ["--memory", memory, "--memory-swap", memory]
    if isolation.gpus:
        # Quoted: Docker reads the value as CSV, and the commas belong to `device=`.
        args += ["--gpus", f'"device={_indices(isolation.gpus)}"']
    return args


def gpu_environment(isolation: Isolation, container: bool) -> dict[str, str]:
    """The variables that say which GPUs a command may use, set after the user's own (which cannot
    widen them). In a container: NVIDIA_VISIBLE_DEVICES, which the NVIDIA runtime reads (`void`: none,
    even in an image that asks for `all`); inside, CUDA numbers the given GPUs from 0. As a process
    on the machine: CUDA_VISIBLE_DEVICES with the machine's own indices (empty: none)."""
    if container:
        return {"NVIDIA_VISIBLE_DEVICES": _indices(isolation.gpus) or "void"}
    return {"CUDA_VISIBLE_DEVICES": _indices(isolation.gpus)}


def _indices(gpus: tuple[int, ...]) -> str:
    return ",".join(str(i) for i in gpus)


def check_mount_source(source: str, local: bool) -> None:
    """Refuse to mount the Docker socket (by either of its names, or, on this host, anything that
    resolves to a socket). local: the path is on this host and can be looked at."""
    paths = {os.path.normpath(source)}
    if local:
        paths.add(os.path.realpath(source))
    if paths & set(DOCKER_SOCKETS) or any(os.path.basename(p) == "docker.sock" for p in paths):
        raise MountRefused(f"refusing to mount {source}: the Docker socket would give the container the machine")
    if local:
        try:
            is_socket = stat.S_ISSOCK(os.stat(source).st_mode)
        except OSError:
            return
        if is_socket:
            raise MountRefused(f"refusing to mount {source}: a socket is never mounted into a container")
