"""Creating a task (the CLI and the API share create_task): everything checked, then the row and
its first children written."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vh_orch.config.steps import StepWithout, get_step, parse_config, resolve_parameters
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.models import Task
from vh_orch.orchestrator.submit import SubmitRequest, ensure_storable, keep_commit, load_snapshot, prepare
from vh_orch.orchestrator.tasks.definition import body_from_yaml, parse_spec
from vh_orch.orchestrator.tasks.engine import TaskEngine

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Project
    from vh_orch.orchestrator.store import Store
    from vh_orch.storage.snapshots import Snapshot
    from vh_orch.settings import Settings


@dataclass(frozen=True)
class TaskRequest:
    """A task to create: a valohai.yaml task by `name`, or an API `body` (type, parameters,
    configuration, ...). `run` says where and how its children run (its step is filled in from
    the named task). `overrides` replace top-level keys of the body (max queued, on-child-error...)."""

    run: SubmitRequest
    name: str | None = None
    body: dict[str, Any] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    # A pipeline's task node: its node and try (Task.pipeline_node_id/pipeline_attempt, unique
    # together), and the project and snapshot it runs (the pipeline's commit, loaded already).
    pipeline_node_id: int | None = None
    pipeline_attempt: int | None = None
    snapshot: tuple[Project, Snapshot] | None = None


def create_task(store: Store, settings: Settings, req: TaskRequest) -> Task:
    """Check everything, write the task, and create its first children; nothing is written on a
    UserInputError."""
    project, snapshot = load_snapshot(store, settings, req.run) if req.snapshot is None else req.snapshot
    run = req.run
    if req.name is not None:
        config = parse_config(snapshot.config_yaml)
        yaml_task = config.tasks.get(req.name)
        if yaml_task is None:
            known = ", ".join(sorted(config.tasks)) or "none"
            raise UserInputError(f"unknown task {req.name!r}; valohai.yaml defines: {known}")
        body = body_from_yaml(yaml_task)
        run = replace(run, step=yaml_task.step)
    elif req.body is not None:
        body = dict(req.body)
    else:
        raise UserInputError("a task needs a valohai.yaml task name or a definition")
    for key, value in req.overrides.items():
        if value is not None:
            if key in ("execution_count", "execution_batch_size"):
                body["configuration"] = {**(body.get("configuration") or {}), key: value}
            else:
                body[key] = value

    step = get_step(parse_config(snapshot.config_yaml), run.step)
    variants = dict(body.get("parameters") or {})
    if run.parameters:  # -p NAME=VALUE: the same value in every child
        given = run.parameters
        unknown = sorted(set(given) - set(step.parameters))
        if unknown:
            raise UserInputError(f"unknown parameter {unknown[0]!r} for step {step.name!r}; "
                                 f"it has: {', '.join(step.parameters) or 'none'}")
        typed = resolve_parameters(StepWithout(step, set(step.parameters) - set(given)), given)  # type: ignore[arg-type]
        for name, value in typed.items():
            variants[name] = {"style": "single", "rules": {"value": value}}
        run = replace(run, parameters={})
    body["parameters"] = variants
    spec = parse_spec(body, step, seed=req.seed)
    prepared = prepare(store, settings, run, vary=frozenset(v.name for v in spec.variants),
                       snapshot=(project, snapshot))
    resolved = prepared.resolved
    template = {
        "image": prepared.image,
        "pull_policy": prepared.pull_policy,
        "inputs": prepared.inputs,
        "environment_variables": resolved.environment_variables,
        "time_limit_s": resolved.time_limit_s,
        "priority": run.priority,
        "title": run.title,
        "restricted": prepared.restricted,
        "gpus": prepared.gpus,
    }
    ensure_storable({"task": spec.to_json(), "template": template, "title": run.title, "user": prepared.user})
    commit = keep_commit(store, prepared)
    task = store.create_task(Task(
        project_id=prepared.project_id, counter=0, commit_id=commit.id,  # type: ignore[arg-type]
        step=step.name, name=req.name, title=run.title, type=spec.type, spec=spec.to_json(), template=template,
        environment_id=prepared.environment_id, user=prepared.user,
        pipeline_node_id=req.pipeline_node_id, pipeline_attempt=req.pipeline_attempt,
    ))
    TaskEngine(store).advance(task.id)  # type: ignore[arg-type]
    return store.get_task(task.id)  # type: ignore[arg-type]
