"""Tasks: creating them (the CLI and the API share create_task) and moving them on.

A task's state is its row and its children's rows, nothing else: `advance()` reads them,
decides, and writes, so a daemon killed at any moment resumes every task where the database
says it is. The next children are decided and inserted in one transaction under the task's row
(store.add_task_children), so none is created twice. A Bayesian search's study is rebuilt from
the children on each decision: optuna's TPE is told every earlier child (finished: its target
value, or failed; still running: its parameters, which TPE's constant liar keeps it away from).
"""

from __future__ import annotations

import logging
import random
import statistics
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vh_orch.config.steps import build_command, get_step, parse_config, resolve_parameters
from vh_orch.config.tasks import (
    MedianStopping,
    distribution_of,
    grid_size,
    StepWithout,
    TaskSpec,
    body_from_yaml,
    child_parameters,
    linear_values,
    logspace_values,
    parse_spec,
    plan,
    typed_value,
)
from vh_orch.errors import LeaseLost, UserInputError
from vh_orch.orchestrator.models import FINAL_STATUSES, Execution, ExecutionStatus, Task, TaskStatus
from vh_orch.orchestrator.store.tasks import ChildState
from vh_orch.orchestrator.submit import SubmitRequest, ensure_storable, keep_commit, load_snapshot, prepare

if TYPE_CHECKING:
    from valohai_yaml.objs import Step

    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings

log = logging.getLogger(__name__)

S = ExecutionStatus
T = TaskStatus
MEDIAN_REASON = "median stopping"


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


def create_task(store: Store, settings: Settings, req: TaskRequest) -> Task:
    """Check everything, write the task, and create its first children; nothing is written on a
    UserInputError."""
    project, snapshot = load_snapshot(store, settings, req.run)
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
    }
    ensure_storable({"task": spec.to_json(), "template": template, "title": run.title, "user": prepared.user})
    commit = keep_commit(store, prepared)
    task = store.create_task(Task(
        project_id=prepared.project_id, counter=0, commit_id=commit.id,  # type: ignore[arg-type]
        step=step.name, name=req.name, title=run.title, type=spec.type, spec=spec.to_json(), template=template,
        environment_id=prepared.environment_id, user=prepared.user,
    ))
    TaskEngine(store).advance(task.id)  # type: ignore[arg-type]
    return store.get_task(task.id)  # type: ignore[arg-type]


# --- what a task's children tell ---------------------------------------------------------------------


def spec_of(task: Task) -> TaskSpec:
    return TaskSpec.from_json({k: v for k, v in task.spec.items() if not k.startswith("_")})


def total_children(spec: TaskSpec, planned: list[dict[str, Any]] | None) -> int:
    if planned is not None:
        return len(planned)
    return spec.execution_count or 0


def planned_count(spec: TaskSpec) -> int:
    """How many children the task has in all, without making them (a grid's size is a product)."""
    if spec.type in ("random_search", "bayesian_tpe"):
        return spec.execution_count or 0
    if spec.type == "manual_search":
        return len(plan(spec))
    size = grid_size(spec)
    return size if spec.execution_count is None else min(size, spec.execution_count)


def task_title(task: Task) -> str:
    """What a task is called where it is shown: its title, its valohai.yaml name, or its type and step."""
    return task.title or task.name or f"{task.type} of {task.step}"


def best_child(spec: TaskSpec, children: list[Execution]) -> dict[str, Any] | None:
    """The finished child with the best target value: {execution, counter, value, objective}."""
    best: tuple[float, Execution] | None = None
    for child in children:
        if child.status not in (S.COMPLETE, S.STOPPED):
            continue
        objective = spec.objective(child.metadata_latest or {})
        if objective is not None and (best is None or objective > best[0]):
            best = (objective, child)
    if best is None:
        return None
    child = best[1]
    return {"execution": child.id, "counter": child.counter,
            "value": child.metadata_latest.get(spec.target_metric or ""), "objective": best[0]}


def search_space(spec: TaskSpec, step: Step | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Bayesian search's optuna distributions, and the values that do not vary (single style)."""
    import math

    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    fixed: dict[str, Any] = {}

    def typed(name: str, values: list[Any]) -> list[Any]:
        if step is None:
            return values
        out: list[Any] = []
        for value in values:
            value = typed_value(step.parameters[name], value)
            if value not in out:
                out.append(value)
        return out

    for v in spec.variants:
        rules = v.rules
        if v.style == "single":
            fixed[v.name] = rules["value"]
        elif v.style == "multiple":
            choices = typed(v.name, list(rules["items"]))
            for choice in choices:
                if not (choice is None or isinstance(choice, (bool, int, float, str))):
                    raise UserInputError(f"task parameter {v.name!r}: item {choice!r} is not a plain value")
            space[v.name] = CategoricalDistribution(choices)
        elif v.style == "logspace":
            space[v.name] = CategoricalDistribution(typed(v.name, logspace_values(rules)))
        elif v.style == "linear":
            values = linear_values(rules)
            if all(isinstance(x, int) for x in values) and len(values) > 1:
                space[v.name] = IntDistribution(values[0], values[-1], step=values[1] - values[0])
            else:
                space[v.name] = CategoricalDistribution(typed(v.name, values))
        else:
            low, high = float(rules["min"]), float(rules["max"])
            log = distribution_of(rules) == "loguniform"
            if rules.get("integerify"):
                space[v.name] = IntDistribution(math.ceil(low), math.floor(high), log=log)
            else:
                space[v.name] = FloatDistribution(low, high, log=log)
    return space, fixed


def ask(spec: TaskSpec, children: list[Execution], index: int, step: Step | None = None,
        pending: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The next Bayesian child's varied values: optuna's TPE, told every child so far."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, fixed = search_space(spec, step)
    count = spec.execution_count or 10
    # A seed per child, mixed (not seed + index: tasks seeded 1 and 2 would share children, shifted by one).
    child_seed = random.Random(f"{spec.seed}:{index}").randrange(2**32)
    sampler = optuna.samplers.TPESampler(seed=child_seed, constant_liar=True,
                                         n_startup_trials=max(2, min(10, count // 5)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for child in children:
        params = {name: child.parameters.get(name) for name in space}
        if any(not _within(space[name], value) for name, value in params.items()):
            continue  # not a child this space could have asked for (a changed definition): no say
        if child.status not in FINAL_STATUSES:
            study.add_trial(create_trial(params=params, distributions=space, state=TrialState.RUNNING))
            continue
        objective = spec.objective(child.metadata_latest or {}) if child.status != S.ERROR else None
        if objective is not None and (child.status_reason or "").startswith(MEDIAN_REASON):
            # Stopped early for trailing: its last value is not a final one (optuna's "pruned").
            study.add_trial(create_trial(params=params, distributions=space, state=TrialState.PRUNED,
                                         intermediate_values={1: objective}))
        elif objective is None:
            study.add_trial(create_trial(params=params, distributions=space, state=TrialState.FAIL))
        else:
            study.add_trial(create_trial(params=params, distributions=space, value=objective))
    for params in pending or []:
        study.add_trial(create_trial(params={k: params[k] for k in space}, distributions=space,
                                     state=TrialState.RUNNING))
    trial = study.ask(space)
    return {**fixed, **trial.params}


def _within(distribution: Any, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))  # noqa: SLF001
    except Exception:
        return False


# --- the median-stopping rule -------------------------------------------------------------------------


def series(points: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """A child's metric by step: the point's `step` (or `epoch`) when it has one, else its ordinal."""
    from vh_orch.config.tasks import number

    out: dict[int, float] = {}
    ordinal = 0
    for point in points:
        value = number(point.get(metric))
        if value is None:
            continue
        stamp = point.get("step", point.get("epoch"))
        key = int(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else ordinal
        out[key] = value
        ordinal += 1
    return out


def should_stop(rule: MedianStopping, spec: TaskSpec, running: dict[int, float],
                finished: list[dict[int, float]]) -> bool:
    """optuna's MedianPruner on one running child's series against the finished children's."""
    import optuna
    from optuna.trial import TrialState, create_trial

    if len(finished) < rule.min_finished or not running:
        return False
    sign = (lambda v: -abs(v - spec.target_value)) if (  # noqa: E731
        rule.metric == spec.target_metric and spec.target_value is not None) else (lambda v: v)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    dist = {"_": optuna.distributions.FloatDistribution(0, 1)}
    for values in finished:
        if values:
            last = max(values)
            study.add_trial(create_trial(params={"_": 0.5}, distributions=dist, value=sign(values[last]),
                                         intermediate_values={k: sign(v) for k, v in values.items()}))
    trial = create_trial(params={"_": 0.5}, distributions=dist, state=TrialState.RUNNING,
                         intermediate_values={k: sign(v) for k, v in running.items()})
    pruner = optuna.pruners.MedianPruner(n_startup_trials=rule.min_finished, n_warmup_steps=rule.warmup_steps)
    return bool(pruner.prune(study, trial))


# --- moving tasks on ----------------------------------------------------------------------------------


class TaskEngine:
    """Moves every active task on: one call per daemon pass (and one after a task is created)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._plans: dict[int, list[dict[str, Any]]] = {}
        self._series: dict[int, dict[int, float]] = {}  # finished children's median-stopping series
        self._lock = threading.Lock()

    def run_pass(self, store: Store | None = None) -> None:
        """Move every active task on; `store`: the one to write through from now on (a replica's,
        fenced by its `cluster` lease)."""
        if store is not None:
            self.store = store
        for task in self.store.active_tasks():
            try:
                self.advance(task.id)  # type: ignore[arg-type]
            except LeaseLost:
                raise
            except Exception as exc:
                log.exception("task %s could not be moved on", task.id)
                if isinstance(exc, UserInputError):
                    self.store.set_task_status(task.id, T.ERROR, f"its next execution cannot be made: {exc}")  # type: ignore[arg-type]

    def advance(self, task_id: int) -> None:
        with self._lock:
            self._advance(task_id)

    def _advance(self, task_id: int) -> None:
        task = self.store.get_task(task_id)
        if T(task.status).is_final:
            return
        children = self.store.task_child_states(task_id)
        if task.status == T.STOPPING:
            if all(c.status in FINAL_STATUSES for c in children):
                final = task.spec.get("_final", T.STOPPED)
                self.store.set_task_status(task_id, final)
            else:
                self.store.stop_task(task_id, task.status_reason or "the task is stopping")
            return
        spec = spec_of(task)
        failed = [c for c in children if c.status == S.ERROR]
        if failed and spec.on_child_error == "stop-all-and-error":
            first = failed[0]
            self.store.stop_task(task_id, f"execution #{first.counter} failed ({first.status_reason}); "
                                          "on-child-error is stop-all-and-error", final=T.ERROR)
            return
        if spec.median_stopping is not None:
            self._median_stop(task, spec, children)
        planned = self._plan(task, spec)
        if _room(spec, planned, children) > 0:  # only then a write (under the task's row)
            if self.store.add_task_children(task_id, self._decider()):
                return
        if len(children) >= total_children(spec, planned) and all(c.status in FINAL_STATUSES for c in children):
            self._finish(task, spec, self.store.task_children(task_id))

    def _plan(self, task: Task, spec: TaskSpec) -> list[dict[str, Any]] | None:
        if spec.type == "bayesian_tpe":
            return None
        planned = self._plans.get(task.id)  # type: ignore[arg-type]
        if planned is None:
            planned = self._plans[task.id] = plan(spec)  # type: ignore[index]
        return planned

    def _finish(self, task: Task, spec: TaskSpec, children: list[Execution]) -> None:
        failed = [c for c in children if c.status == S.ERROR]
        counts = ", ".join(f"{n} {status}" for status, n in sorted(_count_statuses(children).items()))
        best = best_child(spec, children)
        detail = f"{len(children)} executions: {counts}" if children else "no executions"
        if best is not None:
            detail += f"; best #{best['counter']} with {spec.target_metric} = {best['value']}"
        if failed and spec.on_child_error == "continue-and-error":
            self.store.set_task_status(task.id, T.ERROR, f"{len(failed)} of {detail} (on-child-error is "  # type: ignore[arg-type]
                                                         "continue-and-error)")
        else:
            self.store.set_task_status(task.id, T.COMPLETE, detail)  # type: ignore[arg-type]
        self._plans.pop(task.id, None)  # type: ignore[arg-type]

    def _decider(self) -> Any:
        def decide(task: Task, states: list[ChildState]) -> list[Execution]:
            spec = spec_of(task)
            planned = self._plan(task, spec)
            room = _room(spec, planned, states)
            if spec.on_child_error == "stop-all-and-error" and any(c.status == S.ERROR for c in states):
                return []  # a child failed since the pass looked: the next pass stops the task
            if room <= 0:
                return []
            step = get_step(parse_config(self.store.get_commit(task.commit_id).config_yaml), task.step)
            children = self.store.task_children(task.id) if planned is None else []  # type: ignore[arg-type]
            new: list[Execution] = []
            pending: list[dict[str, Any]] = []
            for index in range(len(states), len(states) + room):
                if planned is not None:
                    varied = planned[index]
                else:
                    varied = ask(spec, children, index, step, pending)
                    pending.append(varied)
                new.append(self._child(task, step, index, varied))
            return new

        return decide

    def _child(self, task: Task, step: Step, index: int, varied: dict[str, Any]) -> Execution:
        parameters = child_parameters(step, varied)
        t = task.template
        base = t.get("title") or task.title or (f"{task.name}" if task.name else f"task {task.counter}")
        return Execution(
            project_id=task.project_id, counter=0, commit_id=task.commit_id, step=task.step,
            title=f"{base} #{index + 1}", image=t.get("image"), pull_policy=t.get("pull_policy"),
            command=build_command(step, parameters), parameters=parameters, inputs=t.get("inputs") or {},
            environment_variables=t.get("environment_variables") or {}, time_limit_s=t.get("time_limit_s"),
            environment_id=task.environment_id, priority=t.get("priority") or 0, user=task.user,
            task_id=task.id, task_index=index, restricted=bool(t.get("restricted")),
        )

    def _median_stop(self, task: Task, spec: TaskSpec, children: list[ChildState]) -> None:
        rule = spec.median_stopping
        assert rule is not None
        finished = []
        durations = []
        for child in children:
            if child.status == S.COMPLETE:
                if child.id not in self._series:
                    points = [p.data for p in self.store.metadata_points(child.id)]  # type: ignore[arg-type]
                    self._series[child.id] = series(points, rule.metric)  # type: ignore[index]
                finished.append(self._series[child.id])  # type: ignore[index]
                if child.started_at and child.ended_at:
                    durations.append((child.ended_at - child.started_at).total_seconds())
        if len(finished) < rule.min_finished:
            return
        typical = statistics.median(durations) if durations else 0.0
        for child in children:
            if child.status != S.STARTED:
                continue
            running = series([p.data for p in self.store.metadata_points(child.id)], rule.metric)  # type: ignore[arg-type]
            if should_stop(rule, spec, running, finished):
                elapsed = (self.store.clock() - child.started_at).total_seconds() if child.started_at else 0.0
                last = max(running)
                reason = (f"{MEDIAN_REASON}: {rule.metric} = {running[last]:g} at step {last} trails the median of "
                          f"{len(finished)} finished executions")
                if self.store.record_pruned(child.id, reason, max(0.0, typical - elapsed)):  # type: ignore[arg-type]
                    log.info("task %s: execution %s stopped early (%s)", task.id, child.id, reason)


def _room(spec: TaskSpec, planned: list[dict[str, Any]] | None, children: list[ChildState]) -> int:
    """How many children may be added now: what is left, within the batch size and max queued."""
    room = total_children(spec, planned) - len(children)
    active = [c for c in children if c.status not in FINAL_STATUSES]
    if spec.batch_size is not None:
        room = min(room, spec.batch_size - len(active))
    if spec.max_queued is not None:
        waiting = sum(1 for c in active if c.status in (S.CREATED, S.QUEUED))
        room = min(room, spec.max_queued - waiting)
    return room


def _count_statuses(children: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for child in children:
        counts[child.status] = counts.get(child.status, 0) + 1
    return counts


def task_summary(store: Store, task: Task, children: list[Execution] | None = None) -> dict[str, Any]:
    """What `task info` and the API show beyond the row: children, counts, best, savings."""
    children = store.task_children(task.id) if children is None else children  # type: ignore[arg-type]
    spec = spec_of(task)
    return {
        "executions": [c.id for c in children],
        "counters": [c.counter for c in children],
        "counts": _count_statuses(children),
        "planned": planned_count(spec),
        "best": best_child(spec, children),
        "median_stopping": None if spec.median_stopping is None else {
            "stopped": task.pruned, "machine_hours_saved": round(task.saved_seconds / 3600, 4)},
    }
