"""GPUs shared out: which indices a claim gives, and how many GPUs a machine of an environment can have.

Pure rules (the store reads the rows and applies them: store/fleet.py's claim), and the one read
that says what a submission is checked against (environment_gpu_limit, submit.py). A machine's GPUs are indices 0..gpus-1 (nvidia-smi's numbering);
an execution holds the indices it was given from its claim until it ends, so two executions that
overlap in time on one machine never share one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from vh_orch.cloud_drivers.capabilities import capabilities

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Environment
    from vh_orch.orchestrator.store import Store


def pick_gpus(machine_gpus: int, held: Collection[int], wanted: int) -> list[int] | None:
    """The lowest `wanted` indices of a machine's GPUs that no running execution holds; None when
    fewer are free."""
    free = [i for i in range(machine_gpus) if i not in held]
    return free[:wanted] if len(free) >= wanted else None


def most_gpus(evidence: Mapping[str | None, int], kinds: Collection[str | None]) -> int | None:
    """The most GPUs a machine of an environment can have, or None when that is not known yet.

    kinds: the environment's kinds of machine (an SSH pool's hosts, else its instance types).
    evidence: per kind, the most GPUs a machine of it was found (or expected) to have, counting only
    machines whose GPUs are known: set-up ones, and any that has GPUs. Known once every kind has
    been seen: a kind not seen yet may have more."""
    if not kinds or not set(kinds) <= set(evidence):
        return None
    return max(evidence[kind] for kind in kinds)


def environment_gpu_limit(store: Store, env: Environment) -> int | None:
    """The most GPUs a machine of `env` can have (None: not known yet): what a submission is checked
    against, from the machines set up so far. The one place that says it: the GPUs an instance type is
    expected to have (known before any machine of it has booted) belong here too."""
    from vh_orch.cloud_drivers.settings import settings_of  # pydantic: loaded where settings are read

    assert env.id is not None
    settings = settings_of(env)
    if capabilities(env.cloud).host_pool:
        return most_gpus(store.gpus_found(env.id, by_zone=True), [z for z in settings.zones if z is not None])
    kinds = settings.instance_types or (env.instance_type,)
    return most_gpus(store.gpus_found(env.id, by_zone=False), kinds)
