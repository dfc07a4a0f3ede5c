"""`vh-orch task ...`: run a valohai.yaml task (a search over a step's parameters), follow and stop it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vh_orch.cli.common import open_store, print_fields, print_json, print_table, settings
from vh_orch.cli.options import AdhocOption, CommitOption, ProjectOption
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Task
    from vh_orch.orchestrator.store import Store

app = typer.Typer(help="Tasks: searches over a step's parameters (grid, random, Bayesian).", no_args_is_help=True)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Task name from valohai.yaml (`- task:`)")],
    project: ProjectOption,
    commit: CommitOption = None,
    adhoc: AdhocOption = None,
    env: Annotated[str | None, typer.Option("--env", help="Environment (default: local)")] = None,
    param: Annotated[list[str] | None, typer.Option("-p", "--param",
                                                    help="NAME=VALUE: the same value in every execution")] = None,
    input_: Annotated[list[str] | None, typer.Option("-i", "--input", help="NAME=URL or path, repeatable")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Docker image (default: the step's)")] = None,
    env_var: Annotated[list[str] | None, typer.Option("-e", "--env-var", help="NAME=VALUE, repeatable")] = None,
    pull: Annotated[str | None, typer.Option("--pull", help="Image pull policy: if-missing, always, never")] = None,
    title: Annotated[str | None, typer.Option("--title")] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first")] = 0,
    execution_count: Annotated[int | None, typer.Option("--execution-count", help="Override the task's")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="At most this many executions queued or "
                                                                       "running at once")] = None,
    max_queued: Annotated[int | None, typer.Option("--max-queued", help="At most this many queued at once")] = None,
    on_child_error: Annotated[str | None, typer.Option(
        "--on-child-error", help="continue-and-complete, continue-and-error or stop-all-and-error")] = None,
    median_stopping: Annotated[bool, typer.Option(
        "--median-stopping", help="Stop executions whose metric trails the finished ones' median")] = False,
    median_warmup: Annotated[int | None, typer.Option(
        "--median-warmup", help="With --median-stopping: steps every execution may run before it can be stopped")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the random draws (default: chosen, "
                                                             "shown by `task info`)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print {\"id\": ...} of the new task")] = False,
) -> None:
    """Start the valohai.yaml task NAME: its executions are queued as its limits allow."""
    from vh_orch.cli.common import note
    from vh_orch.config.steps import parse_assignments
    from vh_orch.orchestrator.submit import SubmitRequest
    from vh_orch.orchestrator.tasks.create import TaskRequest, create_task
    from vh_orch.orchestrator.wakeup import notify_daemon

    s = settings()
    store = open_store(s)
    overrides: dict[str, Any] = {"execution_count": execution_count, "execution_batch_size": batch_size,
                                 "maximum_queued_executions": max_queued, "on_child_error": on_child_error,
                                 "median_stopping": None}
    if median_stopping or median_warmup is not None:
        overrides["median_stopping"] = {} if median_warmup is None else {"warmup_steps": median_warmup}
    task = create_task(store, s, TaskRequest(
        run=SubmitRequest(project=project, step="", commit=commit, adhoc=Path(adhoc) if adhoc is not None else None,
                          environment=env, parameters=parse_assignments(param or [], "parameter"),
                          inputs=parse_assignments(input_ or [], "input"),
                          environment_variables=parse_assignments(env_var or [], "environment variable"),
                          image=image, pull_policy=pull, title=title, priority=priority),
        name=name, overrides=overrides, seed=seed,
    ))
    notify_daemon(s)
    if json_out:
        print_json({"id": task.id, "counter": task.counter, "status": task.status})
    else:
        note(f"task {task.id} (!{task.counter} in {project}) started: {task_plan_text(store, task)}")


def task_plan_text(store: Store, task: Task) -> str:
    from vh_orch.orchestrator.tasks.summary import task_summary

    summary = task_summary(store, task)
    return f"{summary['planned']} executions of step {task.step!r} ({task.type})"


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project")] = None,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List tasks, newest first."""
    store = open_store()
    project_ids = [store.get_project(project).id] if project else None  # type: ignore[list-item]
    tasks, _ = store.list_tasks(project_ids=project_ids, limit=limit)
    counts = store.task_child_counts([t.id for t in tasks])  # type: ignore[misc]
    names = store.project_names()
    if json_out:
        print_json([{**task_row(t, names), "counts": counts.get(t.id, {})} for t in tasks])  # type: ignore[arg-type]
        return
    rows = [[t.id, names.get(t.project_id), t.counter, t.name or "", t.type, t.status,
             " ".join(f"{n} {st}" for st, n in sorted(counts.get(t.id, {}).items())),  # type: ignore[arg-type]
             iso(t.created_at)] for t in tasks]
    print_table(None, ["id", "project", "!", "name", "type", "status", "executions", "created"], rows)


def task_row(task: Task, names: dict[int, str]) -> dict[str, Any]:
    return {"id": task.id, "counter": task.counter, "project": names.get(task.project_id), "name": task.name,
            "title": task.title, "step": task.step, "type": task.type, "status": task.status,
            "status_reason": task.status_reason, "created_at": iso(task.created_at),
            "started_at": iso(task.started_at), "ended_at": iso(task.ended_at)}


def task_info_dict(store: Store, task: Task) -> dict[str, Any]:
    from vh_orch.orchestrator.tasks.summary import spec_of, task_summary

    spec = spec_of(task)
    return {**task_row(task, store.project_names()), **task_summary(store, task),
            "seed": spec.seed, "target_metric": spec.target_metric, "target_value": spec.target_value,
            "execution_batch_size": spec.batch_size, "maximum_queued_executions": spec.max_queued,
            "on_child_error": spec.on_child_error, "stop_condition": spec.stop_condition,
            "parameters": {v.name: {"style": v.style, "rules": v.rules} for v in spec.variants}}


@app.command("info")
def info(
    task_id: Annotated[int, typer.Argument(metavar="ID")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A task: its status, its executions by status, and its best execution by the target metric."""
    store = open_store()
    data = task_info_dict(store, store.get_task(task_id))
    if json_out:
        print_json(data)
        return
    best = data["best"]
    fields: list[tuple[str, Any]] = [
        ("name", data["name"] or "-"), ("type", data["type"]), ("step", data["step"]),
        ("status", data["status"] + (f" ({data['status_reason']})" if data["status_reason"] else "")),
        ("executions", f"{len(data['executions'])} of {data['planned']}: "
                       + (", ".join(f"{n} {st}" for st, n in sorted(data["counts"].items())) or "none yet")),
        ("target", (data["target_metric"] or "-") + ("" if data["target_value"] is None
                                                      else f" (closest to {data['target_value']:g})")),
        ("best", "-" if best is None else f"execution {best['execution']} (#{best['counter']}): {best['value']}"),
        ("seed", data["seed"]),
    ]
    if data["median_stopping"] is not None:
        saved = data["median_stopping"]
        fields.append(("median stopping", f"{saved['stopped']} stopped early, about "
                                          f"{saved['machine_hours_saved']:.3f} machine-hours saved"))
    print_fields(f"task {data['id']} (!{data['counter']} in {data['project']})", dict(fields))


@app.command("wait")
def wait(
    task_id: Annotated[int, typer.Argument(metavar="ID")],
    timeout: Annotated[float | None, typer.Option("--timeout", help="Give up after this many seconds")] = None,
) -> None:
    """Wait until a task ends; exit status 0 only when it ends `complete` (2: still running at --timeout)."""
    from vh_orch.cli.executions import wait_until_final
    from vh_orch.values import FINAL_TASK_STATUSES, TaskStatus

    s = settings()
    store = open_store(s)
    wait_until_final(store, s, f"task {task_id}", lambda: store.get_task(task_id), FINAL_TASK_STATUSES,
                     TaskStatus.COMPLETE, timeout)


@app.command("stop")
def stop(task_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop a task and its executions (running ones stop gracefully; outputs are kept)."""
    from vh_orch.cli.common import note
    from vh_orch.orchestrator.wakeup import notify_daemon

    s = settings()
    store = open_store(s)
    store.get_task(task_id)
    task = store.stop_task(task_id, "stopped by request")
    notify_daemon(s)
    note(f"task {task_id}: {task.status}")

