"""Reading a task definition: a valohai.yaml `- task:` or a `POST /api/v0/tasks/` body, checked
against its step into a TaskSpec (spec.py), or a UserInputError that says what is wrong; and the
parameters of one child, validated like submitted ones."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from vh_orch.config.steps import StepWithout, _validate, build_command, flag_word, resolve_parameters
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.conditions import check_condition
from vh_orch.orchestrator.tasks.search import plan, search_space, typed_value
from vh_orch.orchestrator.tasks.spec import (
    DEFAULT_ON_CHILD_ERROR,
    MAX_CHILDREN,
    MedianStopping,
    TaskSpec,
    Variant,
    distribution_of,
    finite_number,
    whole_number,
)

if TYPE_CHECKING:
    from valohai_yaml.objs import Step
    from valohai_yaml.objs.task import Task as YamlTask

TASK_TYPES = ("grid_search", "manual_search", "random_search", "bayesian_tpe")
STYLES = ("single", "multiple", "linear", "logspace", "random")
DISTRIBUTIONS = ("uniform", "loguniform")
ON_CHILD_ERROR = ("continue-and-complete", "continue-and-error", "stop-all-and-error")
DEFAULT_BAYESIAN_BATCH = 4
ENGINES = ("optuna",)


# --- reading a definition -------------------------------------------------------------------------


def body_from_yaml(task: YamlTask) -> dict[str, Any]:
    """A valohai.yaml task as the API body valohai-cli 0.37 would send for it (`vh task run`)."""
    variants: dict[str, Any] = {vp.name: {"style": vp.style.value, "rules": dict(vp.rules or {})}
                                for vp in task.parameters}
    if task.parameter_sets:
        collected: dict[str, list[Any]] = {}
        for parameter_set in task.parameter_sets:
            for name, value in parameter_set.items():
                collected.setdefault(name, []).append(value)
        for name, items in collected.items():
            variants[name] = {"style": "multiple", "rules": {"items": items}}
    configuration = {key: getattr(task, key) for key in (
        "execution_count", "execution_batch_size", "optimization_target_metric", "optimization_target_value", "engine")
        if getattr(task, key, None) is not None}
    body: dict[str, Any] = {"type": task.type.value, "parameters": variants, "configuration": configuration}
    if task.maximum_queued_executions is not None:
        body["maximum_queued_executions"] = task.maximum_queued_executions
    if task.on_child_error is not None:
        body["on_child_error"] = task.on_child_error.value
    if task.stop_condition:
        body["task_stop_expression"] = task.stop_condition
    return body


def parse_spec(body: dict[str, Any], step: Step, seed: int | None = None) -> TaskSpec:
    """Check a task body (the API's shape; see body_from_yaml) against its step: a TaskSpec, or a
    UserInputError that says what is wrong. Every value a child would get is validated here
    (for a Bayesian search: the bounds), so a task that starts has no invalid child."""
    if not isinstance(body, dict):
        raise UserInputError("a task definition must be a mapping")
    type_ = str(body.get("type") or "grid_search").lower().replace("-", "_")
    if type_ not in TASK_TYPES:
        raise UserInputError(f"task type {body.get('type')!r} is not one of {', '.join(TASK_TYPES)}")
    configuration = body.get("configuration") or {}
    if not isinstance(configuration, dict):
        raise UserInputError("configuration must be a mapping")
    raw_parameters = body.get("parameters") or {}
    if not isinstance(raw_parameters, dict):
        raise UserInputError("parameters must be a mapping of names to {style, rules}")
    variants = tuple(_variant(name, raw, step, type_) for name, raw in raw_parameters.items())

    count = whole_number(configuration.get("execution_count", body.get("execution_count")), "execution-count")
    if type_ in ("random_search", "bayesian_tpe") and count is None:
        raise UserInputError(f"a {type_} task needs execution-count: how many executions to run")
    if count is not None and count > MAX_CHILDREN:
        raise UserInputError(f"execution-count {count} is over the limit of {MAX_CHILDREN} executions per task")
    batch = whole_number(configuration.get("execution_batch_size", body.get("execution_batch_size")),
                   "execution-batch-size")
    if batch is None and type_ == "bayesian_tpe":
        batch = DEFAULT_BAYESIAN_BATCH
    max_queued = whole_number(body.get("maximum_queued_executions"), "maximum-queued-executions")
    engine = configuration.get("engine")
    if type_ == "bayesian_tpe" and engine not in (None, *ENGINES):
        raise UserInputError(f"engine {engine!r} is not supported: vh-orch's Bayesian search is optuna's TPE "
                             "(leave engine out, or set it to optuna)")
    metric = configuration.get("optimization_target_metric")
    if metric is not None and (not isinstance(metric, str) or not metric.strip()):
        raise UserInputError(f"optimization-target-metric must be a metadata key, not {metric!r}")
    if type_ == "bayesian_tpe" and not metric:
        raise UserInputError("a bayesian_tpe task needs optimization-target-metric: the metadata key it optimises")
    target = configuration.get("optimization_target_value")
    target_value = None if target is None else finite_number(target, "optimization-target-value")

    on_child_error = str(body.get("on_child_error") or DEFAULT_ON_CHILD_ERROR).lower().replace("_", "-")
    if on_child_error not in ON_CHILD_ERROR:
        raise UserInputError(f"on-child-error {body.get('on_child_error')!r} is not one of {', '.join(ON_CHILD_ERROR)}")
    stop_condition = body.get("task_stop_expression") or body.get("stop_condition") or None
    if stop_condition is not None:
        check_condition(stop_condition, "the task's stop-condition")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    spec_seed = whole_number(configuration.get("seed", body.get("seed")), "seed", minimum=0)
    median = _median(body.get("median_stopping"), metric)

    spec = TaskSpec(type=type_, variants=variants, execution_count=count, batch_size=batch,
                    max_queued=max_queued, target_metric=metric, target_value=target_value,
                    on_child_error=on_child_error, stop_condition=stop_condition,
                    seed=seed if spec_seed is None else spec_seed, median_stopping=median)
    if type_ == "bayesian_tpe":
        space, fixed = search_space(spec)
        # The bounds and every choice must be valid values (with the other varied parameters at one of theirs).
        some = {**fixed, **{name: _bounds(d)[0] for name, d in space.items()}}
        _check_values(step, [{**some, name: v} for name, d in space.items() for v in _bounds(d)] or [some],
                      which="the task's search space (its bounds and choices)")
        if not space:
            raise UserInputError("a bayesian_tpe task needs at least one parameter that varies")
    else:
        children = plan(spec)
        if not children:
            raise UserInputError("the task has no executions to run: give its parameters values")
        _check_values(step, children)
    return spec


def _median(raw: Any, metric: str | None) -> MedianStopping | None:
    if raw in (None, False):
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise UserInputError("median_stopping must be true or a mapping {metric, min_finished, warmup_steps}")
    unknown = set(raw) - {"metric", "min_finished", "warmup_steps"}
    if unknown:
        raise UserInputError(f"median_stopping: unknown setting {sorted(unknown)[0]!r} "
                             "(it takes metric, min_finished, warmup_steps)")
    chosen = raw.get("metric") or metric
    if not chosen or not isinstance(chosen, str):
        raise UserInputError("median stopping needs a metric: set optimization-target-metric or median_stopping.metric")
    return MedianStopping(metric=chosen,
                          min_finished=whole_number(raw.get("min_finished", 3), "median_stopping.min_finished") or 1,
                          warmup_steps=whole_number(raw.get("warmup_steps", 0), "median_stopping.warmup_steps",
                                              minimum=0) or 0)


def _variant(name: Any, raw: Any, step: Step, type_: str) -> Variant:
    if not isinstance(name, str) or name not in step.parameters:
        known = ", ".join(step.parameters) or "none"
        raise UserInputError(f"task parameter {name!r} is not a parameter of step {step.name!r}; it has: {known}")
    if not isinstance(raw, dict):
        raise UserInputError(f"task parameter {name!r} must be a mapping {{style, rules}}")
    if step.parameters[name].multiple:
        raise UserInputError(f"task parameter {name!r} takes several values at once (multiple); "
                             "a task varies single values")
    style = str(raw.get("style") or "single").lower()
    if style not in STYLES:
        raise UserInputError(f"task parameter {name!r}: style {raw.get('style')!r} is not one of {', '.join(STYLES)}")
    rules = raw.get("rules")
    if rules is None:
        rules = {k: v for k, v in raw.items() if k != "style"}
    if not isinstance(rules, dict):
        raise UserInputError(f"task parameter {name!r}: rules must be a mapping")
    variant = Variant(name=name, style=style, rules=dict(rules))
    _check_rules(variant, type_)
    return variant


_RULES = {
    "single": ({"value"}, set()),
    "multiple": ({"items"}, set()),
    "linear": ({"start", "end", "step"}, set()),
    "logspace": ({"start", "end", "count"}, {"base"}),
    "random": ({"min", "max"}, {"count", "distribution", "integerify", "seed"}),
}


def _check_rules(variant: Variant, type_: str) -> None:
    where = f"task parameter {variant.name!r} ({variant.style})"
    required, optional = _RULES[variant.style]
    rules = variant.rules
    missing = sorted(required - set(rules))
    if missing:
        raise UserInputError(f"{where}: rules need {', '.join(missing)}")
    unknown = sorted(set(rules) - required - optional)
    if unknown:
        raise UserInputError(f"{where}: unknown rule {unknown[0]!r} (it takes {', '.join(sorted(required | optional))})")
    if variant.style == "multiple":
        if not isinstance(rules["items"], list) or not rules["items"]:
            raise UserInputError(f"{where}: items must be a non-empty list")
    elif variant.style == "linear":
        start, end, step = (finite_number(rules[k], f"{where}: {k}") for k in ("start", "end", "step"))
        if step == 0 or (end - start) * step < 0:
            raise UserInputError(f"{where}: step {rules['step']!r} never goes from {rules['start']!r} to {rules['end']!r}")
        if (end - start) / step + 1 > MAX_CHILDREN:
            raise UserInputError(f"{where}: more than {MAX_CHILDREN} values")
    elif variant.style == "logspace":
        for key in ("start", "end"):
            finite_number(rules[key], f"{where}: {key}")
        if (whole_number(rules["count"], f"{where}: count") or 0) > MAX_CHILDREN:
            raise UserInputError(f"{where}: more than {MAX_CHILDREN} values")
        base = finite_number(rules.get("base", 10), f"{where}: base")
        if base <= 0:
            raise UserInputError(f"{where}: base must be above 0")
    elif variant.style == "random":
        low, high = finite_number(rules["min"], f"{where}: min"), finite_number(rules["max"], f"{where}: max")
        if low > high:
            raise UserInputError(f"{where}: min {rules['min']!r} is above max {rules['max']!r}")
        distribution = distribution_of(rules)
        if distribution not in DISTRIBUTIONS:
            raise UserInputError(f"{where}: distribution {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
        if distribution == "loguniform" and low <= 0:
            raise UserInputError(f"{where}: a loguniform distribution needs min above 0")
        if rules.get("integerify") and math.ceil(low) > math.floor(high):
            raise UserInputError(f"{where}: no whole number lies between min and max")
        if "seed" in rules:
            whole_number(rules["seed"], f"{where}: seed", minimum=0)
        if type_ == "grid_search":
            if "count" not in rules:
                raise UserInputError(f"{where}: in a grid, a random parameter needs count: how many values to draw")
            if (whole_number(rules["count"], f"{where}: count") or 0) > MAX_CHILDREN:
                raise UserInputError(f"{where}: more than {MAX_CHILDREN} values")


# --- values against the step ----------------------------------------------------------------------


def child_parameters(step: Step, varied: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of one child: the varied values, validated like submitted ones, and the
    step's defaults for the rest (a required parameter without a default must be varied)."""
    chosen: dict[str, Any] = {}
    for name, value in varied.items():
        param = step.parameters[name]
        value = typed_value(param, value)
        if param.type != "flag":
            chosen[name] = _validate(param, value)
        elif isinstance(value, bool) or (value := flag_word(str(value))) is not None:
            chosen[name] = value
        else:
            raise UserInputError(f"parameter {name!r}: {varied[name]!r} is not a flag value (true or false)")
    rest = resolve_parameters(StepWithout(step, set(varied)), {})  # type: ignore[arg-type]
    merged = {**rest, **chosen}
    return {name: merged[name] for name in step.parameters if name in merged}


def _check_values(step: Step, children: list[dict[str, Any]], which: str | None = None) -> None:
    for index, varied in enumerate(children):
        try:
            build_command(step, child_parameters(step, varied))
        except UserInputError as exc:
            where = which or (f"execution {index + 1} of the task" if len(children) > 1 else "the task")
            raise UserInputError(f"{where}: {exc}; nothing was created") from None


def _bounds(distribution: Any) -> list[Any]:
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return list(choices)
    return [distribution.low, distribution.high]
