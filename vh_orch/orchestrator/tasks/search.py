"""Which children a task stands for, as pure functions of its TaskSpec (and, for a Bayesian
search or the median-stopping rule, of what earlier children reported).

The same spec gives the same children, in any process, after any restart: random draws come
from per-parameter generators seeded by the task's seed, and a Bayesian search's study is
rebuilt from the children on each decision (optuna's TPE is told every earlier child: finished,
its target value, or failed; still running, its parameters, which TPE's constant liar keeps it
away from).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING, Any

from vh_orch.errors import UserInputError
from vh_orch.orchestrator.tasks.spec import (
    MAX_CHILDREN,
    MedianStopping,
    TaskSpec,
    Variant,
    distribution_of,
    finite_number,
    number,
    whole_number,
)
from vh_orch.values import FINAL_STATUSES, ExecutionStatus

if TYPE_CHECKING:
    from valohai_yaml.objs import Parameter, Step

    from vh_orch.orchestrator.models import Execution

MEDIAN_REASON = "median stopping"


# --- the values a variant stands for --------------------------------------------------------------


def _tidy(value: float) -> float:
    """Drop the float noise of repeated additions (0.1 * 3 = 0.30000000000000004)."""
    return float(f"{value:.12g}")


def linear_values(rules: dict[str, Any]) -> list[Any]:
    start, end, step = (finite_number(rules[k], k) for k in ("start", "end", "step"))
    n = math.floor((end - start) / step + 1e-9) + 1
    values = [_tidy(start + i * step) for i in range(max(n, 0))]
    if all(isinstance(rules[k], int) and not isinstance(rules[k], bool) for k in ("start", "end", "step")):
        return [int(v) for v in values]
    return values


def logspace_values(rules: dict[str, Any]) -> list[Any]:
    start, end = finite_number(rules["start"], "start"), finite_number(rules["end"], "end")
    count = whole_number(rules["count"], "count") or 1
    base = finite_number(rules.get("base", 10), "base")
    if count == 1:
        return [_tidy(base**start)]
    return [_tidy(base ** (start + i * (end - start) / (count - 1))) for i in range(count)]


def _rng(variant: Variant, seed: int) -> random.Random:
    own = variant.rules.get("seed")
    return random.Random(f"{own if own is not None else seed}:{variant.name}")


def draw(variant: Variant, rng: random.Random) -> Any:
    """One value of a random-style variant."""
    rules = variant.rules
    low, high = finite_number(rules["min"], "min"), finite_number(rules["max"], "max")
    if distribution_of(rules) == "loguniform":
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if rules.get("integerify"):
        return min(max(int(round(value)), math.ceil(low)), math.floor(high))
    return value


def values_of(variant: Variant, seed: int) -> list[Any]:
    """Every value a variant takes in a grid (or a manual search)."""
    rules = variant.rules
    if variant.style == "single":
        return [rules["value"]]
    if variant.style == "multiple":
        return list(rules["items"])
    if variant.style == "linear":
        return linear_values(rules)
    if variant.style == "logspace":
        return logspace_values(rules)
    rng = _rng(variant, seed)
    return [draw(variant, rng) for _ in range(whole_number(rules.get("count", 1), "count") or 1)]


def grid_size(spec: TaskSpec) -> int:
    return math.prod(len(values_of(v, spec.seed)) for v in spec.variants)


def plan(spec: TaskSpec) -> list[dict[str, Any]]:
    """Every child's varied parameter values, in order (grid, manual and random searches)."""
    names = [v.name for v in spec.variants]
    if spec.type == "random_search":
        count = spec.execution_count or 0
        columns = []
        for variant in spec.variants:
            rng = _rng(variant, spec.seed)
            if variant.style == "random":
                columns.append([draw(variant, rng) for _ in range(count)])
            else:
                choices = values_of(variant, spec.seed)
                columns.append([rng.choice(choices) for _ in range(count)])
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)] if names else \
            [{} for _ in range(count)]
    lists = [values_of(v, spec.seed) for v in spec.variants]
    if spec.type == "manual_search":
        lengths = {len(values) for values in lists if len(values) != 1}
        if len(lengths) > 1:
            raise UserInputError("a manual search takes one value per parameter per execution: its parameters "
                                 f"have {', '.join(str(len(v)) for v in lists)} values")
        n = lengths.pop() if lengths else 1
        rows = [[values[i] if len(values) > 1 else values[0] for values in lists] for i in range(n)]
        return [dict(zip(names, row, strict=True)) for row in rows]
    size = math.prod(len(values) for values in lists)
    if size > MAX_CHILDREN:
        raise UserInputError(f"the grid has {size} combinations, over the limit of {MAX_CHILDREN} executions per task")
    children = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists)]
    if spec.execution_count is not None:
        children = children[: spec.execution_count]
    return children


def typed_value(param: Parameter, value: Any) -> Any:
    """A generated value in the parameter's type (a whole float for an integer, a number for a float)."""
    if param.type == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if param.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if param.type == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


# --- a Bayesian search ----------------------------------------------------------------------------


def search_space(spec: TaskSpec, step: Step | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Bayesian search's optuna distributions, and the values that do not vary (single style)."""
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
        objective = spec.objective(child.metadata_latest or {}) if child.status != ExecutionStatus.ERROR else None
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


# --- the median-stopping rule ---------------------------------------------------------------------


def series(points: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """A child's metric by step: the point's `step` (or `epoch`) when it has one, else its ordinal."""
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
