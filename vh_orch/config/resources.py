"""What a step's `resources:` in valohai.yaml asks of its machine, checked.

valohai-yaml reads `resources: {cpu: {min, max}, memory: {min, max}, devices: {...}}`. The
maxima are limits the container is held to (CPUs in cores, memory in MB). The minima are what
a machine must have for the step to run there at all: a step is refused at submission when its
environment's machines are known to have less (today: this host, for the environments whose
executions run here; a machine over SSH or in a cloud records no CPU count or memory size yet).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from vh_orch.bootstrap.isolation import MIN_CPUS, MIN_MEMORY_MB, MiB, Limits
from vh_orch.errors import UserInputError

MAX_CPUS = 10_000  # beyond any machine: a larger number is a typo, not a limit
MAX_MEMORY_MB = 1 << 30  # 1 PiB, likewise


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


def _between(value: Any, low: float, high: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and low <= value <= high
