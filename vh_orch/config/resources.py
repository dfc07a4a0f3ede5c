"""What a step's `resources:` in valohai.yaml asks of its machine, checked.

valohai-yaml reads `resources: {cpu: {min, max}, memory: {min, max}, devices: {...}}`. The
maxima are limits the container is held to (CPUs in cores, memory in MB); the minima are
requests for placement, which vh-orch does not act on yet (an environment names its machine).
`devices: {nvidia.com/gpu: N}` asks for N GPUs of the machine, given to it alone.
"""

from __future__ import annotations

import math
from typing import Any

from vh_orch.bootstrap.gpus import MAX_GPUS
from vh_orch.bootstrap.isolation import MIN_CPUS, MIN_MEMORY_MB, Limits
from vh_orch.errors import UserInputError

MAX_CPUS = 10_000  # beyond any machine: a larger number is a typo, not a limit
MAX_MEMORY_MB = 1 << 30  # 1 PiB, likewise
GPU_DEVICE = "nvidia.com/gpu"  # the one device vh-orch gives out (Kubernetes' name, as Valohai writes it)


def step_limits(step: Any) -> Limits:
    """The limits a valohai-yaml Step's resources ask for; a UserInputError names a value that cannot be one."""
    resources = getattr(step, "resources", None)
    cpu = getattr(getattr(resources, "cpu", None), "max", None)
    memory = getattr(getattr(resources, "memory", None), "max", None)
    if cpu is not None and not _between(cpu, MIN_CPUS, MAX_CPUS):
        raise UserInputError(f"step {step.name!r}: resources.cpu.max: {cpu!r} is not a number of CPUs "
                             f"({MIN_CPUS} to {MAX_CPUS}; e.g. 0.5 or 4)")
    if memory is not None and not _between(memory, MIN_MEMORY_MB, MAX_MEMORY_MB):
        raise UserInputError(f"step {step.name!r}: resources.memory.max: {memory!r} is not a memory size in MB "
                             f"({MIN_MEMORY_MB} to {MAX_MEMORY_MB}; e.g. 2048)")
    return Limits(cpus=float(cpu) if cpu is not None else None,
                  memory_mb=float(memory) if memory is not None else None)


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
