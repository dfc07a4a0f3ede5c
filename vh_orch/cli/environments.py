"""`vh-orch env ...` and `vh-orch machine ...`"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vh_orch.bootstrap.runtimes import PULL_POLICIES
from vh_orch.cli.common import open_store, print_fields, print_json, print_table
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.daemon import RUNTIMES, choose_runtime
from vh_orch.orchestrator.models import Environment, ExecutionStatus

app = typer.Typer(help="Environments: named machine kinds, each with its own queue.", no_args_is_help=True)
machine_app = typer.Typer(help="Machines serving the environments.", no_args_is_help=True)

S = ExecutionStatus


def _env_dict(env: Environment, with_runtime: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": env.name,
        "cloud": env.cloud,
        "min_scale": env.min_scale,
        "max_scale": env.max_scale,
        "idle_timeout_s": env.idle_timeout_s,
        "instance_type": env.instance_type,
        "region": env.region,
        "spot": env.spot,
        "price_per_hour": env.price_per_hour,
        "slots": env.slots,
        "max_attempts": env.max_attempts,
        "settings": env.settings,
    }
    if with_runtime and env.cloud == "local":
        runtime, why = choose_runtime(env)
        data["runtime"] = runtime
        data["runtime_reason"] = why
    return data


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List environments with their queues."""
    store = open_store()
    envs = store.list_environments()
    queued = store.executions_in([S.QUEUED])
    running = store.executions_in([S.STARTED, S.STOPPING])
    rows = []
    for env in envs:
        q = sum(1 for e in queued if e.environment_id == env.id)
        r = sum(1 for e in running if e.environment_id == env.id)
        rows.append((env, q, r))
    if json_out:
        print_json([{**_env_dict(env), "queued": q, "running": r} for env, q, r in rows])
        return
    print_table("environments", ["name", "cloud", "slots", "scale", "queued", "running"],
                [[env.name, env.cloud, env.slots, f"{env.min_scale}..{env.max_scale}", q, r] for env, q, r in rows])


@app.command("show")
def show(
    name: Annotated[str, typer.Argument()],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One environment; for `local`, which runtime (docker or process) runs executions and why."""
    store = open_store()
    data = _env_dict(store.get_environment(name), with_runtime=True)
    if json_out:
        print_json(data)
    else:
        print_fields(f"environment {name}", data)


@app.command("update")
def update(
    name: Annotated[str, typer.Argument()],
    runtime: Annotated[str | None, typer.Option("--runtime", help="local: auto, docker or process")] = None,
    pull_policy: Annotated[str | None, typer.Option("--pull-policy", help="if-missing, always or never")] = None,
    slots: Annotated[int | None, typer.Option("--slots", help="Executions at a time per machine")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Change an environment's settings."""
    store = open_store()
    env = store.get_environment(name)
    settings: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    if runtime is not None:
        if env.cloud != "local":
            raise UserInputError("--runtime applies to local environments only")
        if runtime not in RUNTIMES:
            raise UserInputError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        settings["runtime"] = runtime
    if pull_policy is not None:
        if pull_policy not in PULL_POLICIES:
            raise UserInputError(f"pull policy {pull_policy!r} is not one of {', '.join(PULL_POLICIES)}")
        settings["pull_policy"] = pull_policy
    if slots is not None:
        if slots < 1:
            raise UserInputError("--slots must be at least 1")
        changes["slots"] = slots
    env = store.update_environment(name, changes, settings)
    if json_out:
        print_json(_env_dict(env))
    else:
        print(f"environment {name} updated")


@machine_app.command("list")
def machine_list(
    all_: Annotated[bool, typer.Option("--all", help="Include terminated machines")] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Machines, their state and why."""
    store = open_store()
    machines = store.list_machines(include_finished=all_)
    busy = store.executions_in([S.STARTED, S.STOPPING])
    rows = []
    for m, env_name in machines:
        running = [e.id for e in busy if e.machine_id == m.id]
        rows.append({
            "id": m.id, "environment": env_name, "state": m.state, "reason": m.reason,
            "instance_id": m.instance_id, "address": m.address, "bootstrap_step": m.bootstrap_step,
            "executions": running, "created_at": m.created_at, "updated_at": m.updated_at,
        })
    if json_out:
        print_json(rows)
        return
    print_table("machines", ["id", "environment", "state", "step", "executions", "reason"],
                [[r["id"], r["environment"], r["state"], r["bootstrap_step"],
                  ",".join(map(str, r["executions"])), r["reason"]] for r in rows])
