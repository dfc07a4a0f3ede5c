"""What a step's `resources:` in valohai.yaml asks of its machine, checked.

valohai-yaml reads `resources: {cpu: {min, max}, memory: {min, max}, devices: {...}}`. The
maxima are limits the container is held to (CPUs in cores, memory in MB); the minima are
requests for placement, which vh-orch does not act on yet (an environment names its machine).
"""

from __future__ import annotations

import math
from typing import Any

from vh_orch.bootstrap.isolation import MIN_CPUS, MIN_MEMORY_MB, Limits
from vh_orch.errors import UserInputError

MAX_CPUS = 10_000  # beyond any machine: a larger number is a typo, not a limit
MAX_MEMORY_MB = 1 << 30  # 1 PiB, likewise


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


def _between(value: Any, low: float, high: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and low <= value <= high
