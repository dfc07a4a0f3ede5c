"""What the read commands show, shaped once: the Typer commands and the quick path print these.

Everything here works on any `ReadStore`: the Store, or the stdlib-sqlite3 QuickReader,
whose rows carry the same attributes. Nothing here may import SQLAlchemy, Typer or rich.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.orchestrator.costs import execution_cost
from vh_orch.timeutil import iso
from vh_orch.values import BILLED_MACHINE

# Values of models.MachineState and models.ExecutionStatus, spelt out because the models load
# SQLAlchemy; tests/test_cli.py keeps them in step.
HELD, QUEUED, RUNNING = ("created",), ("queued",), ("started", "stopping")


class ReadStore(Protocol):
    """The reads the shaping below makes; rows are Store's models or objects with the same attributes."""

    def get_project_by_id(self, project_id: int) -> Any: ...
    def find_execution(self, execution_id: int) -> Any | None: ...
    def get_commit(self, commit_id: int) -> Any: ...
    def get_environment_by_id(self, env_id: int) -> Any: ...
    def outputs_of(self, execution_id: int) -> Sequence[Any]: ...
    def list_environments(self) -> Sequence[Any]: ...
    def list_machines(self) -> Sequence[tuple[Any, str]]: ...
    def executions_in(self, statuses: Sequence[str]) -> Sequence[Any]: ...
    def recent_failures(self, environment_id: int, limit: int = 20) -> Sequence[Any]: ...
    def machine_and_holders(self, machine_id: int) -> tuple[Any | None, Sequence[Any]]: ...


def input_cache_dict(hits: int, misses: int, size: int | None) -> dict[str, Any]:
    """A machine's (or an environment's) input cache: its size, the inputs found in it and fetched."""
    used = hits + misses
    return {"bytes": size, "hits": hits, "misses": misses, "hit_rate": round(hits / used, 3) if used else None}


# A machine in these has not been set up yet: its GPUs are what its instance type is expected to have.
BEFORE_SET_UP = ("requested", "provisioning", "bootstrapping")


def machine_gpus(m: Any) -> dict[str, Any]:
    """A machine's NVIDIA GPUs: expected from its instance type until it is set up, then as its nvidia-smi
    reported them (gpu_model: the first one's name)."""
    return {"gpus": m.gpus, "gpu_model": m.gpu_model, "gpus_expected": m.state in BEFORE_SET_UP}


def output_dict(o: Any) -> dict[str, Any]:
    """An output, with its `valohai.tags` and output metadata (datasets/metadata.py)."""
    return {"name": o.name, "size": o.size, "sha256": o.sha256, "uri": o.uri, "datum": f"datum://{o.id}", "id": o.id,
            "tags": o.tags or [], "metadata": o.properties or {}}


def utilization_dict(sample: Any) -> dict[str, Any]:
    """One hardware use sample (`exec utilization --json`, the API): CPU in percent of one core,
    memory in bytes, and each GPU the execution was given."""
    return {"time": iso(sample.time), "cpu_percent": sample.cpu_percent, "memory_bytes": sample.memory_bytes,
            "gpus": sample.gpus or []}


def execution_summary(e: Any, projects: dict[int, str], envs: dict[int, str]) -> dict[str, Any]:
    """One row of `exec list --json`."""
    return {
        "id": e.id,
        "counter": e.counter,
        "project": projects.get(e.project_id),
        "step": e.step,
        "title": e.title,
        "status": e.status,
        "status_reason": e.status_reason,
        "environment": envs.get(e.environment_id),
        "priority": e.priority,
        "exit_code": e.exit_code,
        "created_at": e.created_at,
        "started_at": e.started_at,
        "ended_at": e.ended_at,
        "metadata_latest": e.metadata_latest,
        "task": None if getattr(e, "task_id", None) is None else {"id": e.task_id, "index": e.task_index},
    }


def execution_info(store: ReadStore, e: Any) -> dict[str, Any]:
    """`exec info --json`: everything about one execution."""
    project = store.get_project_by_id(e.project_id)
    commit = store.get_commit(e.commit_id)
    env = store.get_environment_by_id(e.environment_id)
    return {
        "id": e.id,
        "counter": e.counter,
        "project": project.name,
        "step": e.step,
        "title": e.title,
        "status": e.status,
        "status_reason": e.status_reason,
        "environment": env.name,
        "runtime": e.runtime,
        "image": e.image,
        "pull_policy": e.pull_policy,
        "commit": {"kind": commit.kind, "identifier": commit.identifier, "ref": commit.ref},
        "parameters": e.parameters,
        "inputs": e.inputs,
        "environment_variables": e.environment_variables,
        "command": e.command,
        "time_limit_s": e.time_limit_s,
        "machine": e.machine_id,
        "gpus": list(e.gpu_indices or []),  # the indices of its machine's GPUs it was given
        "gpus_asked": e.gpus,
        "priority": e.priority,
        "user": e.user,
        "attempt": e.attempt,
        "created_at": e.created_at,
        "queued_at": e.queued_at,
        "started_at": e.started_at,
        "ended_at": e.ended_at,
        "exit_code": e.exit_code,
        "peak_memory_bytes": e.peak_memory_bytes,
        "cost_usd": execution_cost(store, e),  # its share of its machine's bill (a running one's so far)
        "outputs": [output_dict(o) for o in store.outputs_of(e.id)],
        "metadata_latest": e.metadata_latest,
        "task": None if getattr(e, "task_id", None) is None else {"id": e.task_id, "index": e.task_index},
        "rerun_of": rerun_source(store, e),
        "valohai_yaml": commit.config_yaml,
    }


def rerun_source(store: ReadStore, e: Any) -> dict[str, Any] | None:
    """The execution this one was run again from ("Run again" in the web UI): its id and counter."""
    source_id = getattr(e, "rerun_of_id", None)
    source = None if source_id is None else store.find_execution(source_id)
    return None if source is None else {"id": source.id, "counter": source.counter}


def status_rows(store: ReadStore) -> list[dict[str, Any]]:
    """`status --json`: per environment, its live machines by state, its executions held by quota,
    queued and running, the cost per hour of its billed machines and its last launch failure."""
    machines = store.list_machines()
    held = Counter(e.environment_id for e in store.executions_in(HELD))
    queued = Counter(e.environment_id for e in store.executions_in(QUEUED))
    running = Counter(e.environment_id for e in store.executions_in(RUNNING))
    rows: list[dict[str, Any]] = []
    for env in store.list_environments():
        states = Counter(m.state for m, _ in machines if m.environment_id == env.id)
        billed = sum(states[s] for s in BILLED_MACHINE) if capabilities(env.cloud).billed else 0
        failures = store.recent_failures(env.id, limit=1)
        last = failures[-1] if failures else None
        rows.append({
            "environment": env.name,
            "cloud": env.cloud,
            "machines": dict(sorted(states.items())),
            "min_scale": env.min_scale,
            "max_scale": env.max_scale,
            "held_by_quota": held[env.id],
            "queued": queued[env.id],
            "running": running[env.id],
            "cost_per_hour": round(billed * env.price_per_hour, 4),
            "last_launch_failure": None if last is None else
            {"time": iso(last.time), "kind": last.kind, "message": last.message},
            # The raw JSON, not settings_of(): the quick path answers without loading pydantic.
            "draining": bool(env.settings.get("draining")),
        })
    return rows
