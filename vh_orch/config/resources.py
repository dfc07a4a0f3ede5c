"""What a step's `resources:` in valohai.yaml asks of its machine, checked.

valohai-yaml reads `resources: {cpu: {min, max}, memory: {min, max}, devices: {...}}`. The
maxima are limits the container is held to (CPUs in cores, memory in MB). The minima are what
a machine must have for the step to run there at all: a step is refused at submission when its
environment's machines are known to have less (today: this host, for the environments whose
executions run here; a machine over SSH or in a cloud records no CPU count or memory size yet).
`devices: {nvidia.com/gpu: N}` asks for N GPUs of the machine, given to it alone.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from vh_orch.bootstrap.gpus import MAX_GPUS
from vh_orch.bootstrap.isolation import MIN_CPUS, MIN_MEMORY_MB, MiB, Limits
from vh_orch.errors import UserInputError

MAX_CPUS = 10_000  # beyond any machine: a larger number is a typo, not a limit
MAX_MEMORY_MB = 1 << 30  # 1 PiB, likewise
GPU_DEVICE = "nvidia.com/gpu"  # the one device vh-orch gives out (Kubernetes' name, as Valohai writes it)


@dataclass(frozen=True)
class Minimums:
    """What a step asks its machine to have at least (where it may run, not what holds it): CPUs in
    cores, memory in MB; None: anything will do."""

    cpus: float | None = None
    memory_mb: float | None = None


@dataclass(frozen=True)
class Capacity:
    """What one machine of an environment has: CPUs (cores) and memory (MB), and how a message names it."""

    cpus: int
    memory_mb: float
    machine: str


def step_limits(step: Any) -> Limits:
    """The limits a valohai-yaml Step's resources ask for; a UserInputError names a value that cannot be one."""
    cpu, memory = _asked(step, "max")
    if cpu is not None and not _between(cpu, MIN_CPUS, MAX_CPUS):
        raise UserInputError(f"step {step.name!r}: resources.cpu.max: {cpu!r} is not a number of CPUs "
                             f"({MIN_CPUS} to {MAX_CPUS}; e.g. 0.5 or 4)")
    if memory is not None and not _between(memory, MIN_MEMORY_MB, MAX_MEMORY_MB):
        raise UserInputError(f"step {step.name!r}: resources.memory.max: {memory!r} is not a memory size in MB "
                             f"({MIN_MEMORY_MB} to {MAX_MEMORY_MB}; e.g. 2048)")
    return Limits(cpus=float(cpu) if cpu is not None else None,
                  memory_mb=float(memory) if memory is not None else None)


def step_minimums(step: Any, limits: Limits) -> Minimums:
    """The minima a valohai-yaml Step's resources ask for, each at most its maximum (limits: the step's,
    step_limits); a UserInputError names a value that cannot be one."""
    cpu, memory = _asked(step, "min")
    for key, value, high, unit, example, limit in (("cpu", cpu, MAX_CPUS, "a number of CPUs", "1 or 4", limits.cpus),
                                                   ("memory", memory, MAX_MEMORY_MB, "a memory size in MB", "2048",
                                                    limits.memory_mb)):
        if value is None:
            continue
        if not _between(value, 0, high):
            raise UserInputError(f"step {step.name!r}: resources.{key}.min: {value!r} is not {unit} "
                                 f"(0 to {high}; e.g. {example})")
        if limit is not None and value > limit:
            raise UserInputError(f"step {step.name!r}: resources.{key}.min: {value:g} is more than its "
                                 f"resources.{key}.max: {limit:g}; make the minimum at most the maximum")
    return Minimums(cpus=float(cpu) if cpu is not None else None,
                    memory_mb=float(memory) if memory is not None else None)


def check_fits(step_name: str, minimums: Minimums, capacity: Capacity | None, environment: str) -> None:
    """Refuse a step whose minima no machine of its environment has (capacity: one machine's, where known)."""
    if capacity is None:
        return
    if minimums.cpus is not None and minimums.cpus > capacity.cpus:
        raise UserInputError(f"step {step_name!r}: resources.cpu.min: {minimums.cpus:g} is more than the "
                             f"{capacity.cpus} CPUs of {capacity.machine}, where environment {environment!r} runs "
                             "it; lower the minimum or choose an environment with bigger machines")
    if minimums.memory_mb is not None and minimums.memory_mb > capacity.memory_mb:
        raise UserInputError(f"step {step_name!r}: resources.memory.min: {minimums.memory_mb:g} MB is more than "
                             f"the {capacity.memory_mb:.0f} MB of {capacity.machine}, where environment "
                             f"{environment!r} runs it; lower the minimum or choose an environment with bigger machines")


def this_host() -> Capacity:
    """This host's CPUs and memory: what an execution that runs here can have at most."""
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MiB
    except (OSError, ValueError):  # not told: nothing is refused for memory
        memory_mb = math.inf
    return Capacity(cpus=os.cpu_count() or 1, memory_mb=memory_mb, machine="this host")


def _asked(step: Any, bound: str) -> tuple[Any, Any]:
    resources = getattr(step, "resources", None)
    return (getattr(getattr(resources, "cpu", None), bound, None),
            getattr(getattr(resources, "memory", None), bound, None))
def step_gpus(step: Any) -> int | None:
    """The GPUs a valohai-yaml Step's `resources.devices` asks for; None when it names none. A
    UserInputError names a device vh-orch cannot give or a count that is not one."""
    devices = getattr(getattr(getattr(step, "resources", None), "devices", None), "devices", None)
    if not devices:
        return None
    where = f"step {step.name!r}: resources.devices"
    if not isinstance(devices, dict):
        raise UserInputError(f"{where}: a mapping of device to count is expected, e.g. {{{GPU_DEVICE}: 1}}")
    others = sorted(str(name) for name in devices if name != GPU_DEVICE)
    if others:
        raise UserInputError(f"{where}: {others[0]!r} is not a device vh-orch can give; only {GPU_DEVICE} "
                             "(NVIDIA GPUs) is")
    if GPU_DEVICE not in devices:
        return None
    return gpu_count(devices[GPU_DEVICE], f"{where}.{GPU_DEVICE}")


def gpu_count(value: Any, where: str) -> int:
    """A number of GPUs asked for (0 to MAX_GPUS), or a UserInputError that names `where`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserInputError(f"{where}: {value!r} is not a number of GPUs (a whole number, 0 to {MAX_GPUS})")
    if not 0 <= value <= MAX_GPUS:
        raise UserInputError(f"{where}: {value} is not a number of GPUs (0 to {MAX_GPUS}: no machine has more)")
    return value


def _between(value: Any, low: float, high: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and low <= value <= high
