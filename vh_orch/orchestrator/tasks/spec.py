"""What a task is: its checked definition (TaskSpec), as stored in the task's row.

definition.py makes one from a valohai.yaml `- task:` or an API body; search.py says which
children it stands for. Semantics (README "Tasks"):
- grid_search: the Cartesian product of every parameter's values, the last parameter varying fastest.
- manual_search: the parameters' value lists side by side (child i takes the i-th value of each;
  a list of one is repeated); valohai-cli sends `parameter-sets` this way.
- random_search: `execution-count` children, each drawing every parameter independently.
- bayesian_tpe: `execution-count` children; each asks optuna's TPE sampler, told what earlier
  children reported (search.ask).
Styles: single (`value`), multiple (`items`), linear (`start`, `end` inclusive, `step`), logspace
(`base` ** each of `count` points from `start` to `end`, `base` 10 by default), random (`min`,
`max`, `distribution` uniform or loguniform, `integerify`, `seed`; `count` draws in a grid).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from vh_orch.errors import UserInputError

DEFAULT_ON_CHILD_ERROR = "continue-and-complete"
MAX_CHILDREN = 10_000


@dataclass(frozen=True)
class Variant:
    name: str
    style: str
    rules: dict[str, Any]


@dataclass(frozen=True)
class MedianStopping:
    """Stop a child whose best value of `metric` up to step k trails the median of the finished
    children's values at step k (optuna's MedianPruner), once `min_finished` children finished
    and after `warmup_steps` steps. A step is the point's `step` (or `epoch`) value when it has
    one, else the number of points with the metric before it."""

    metric: str
    min_finished: int = 3
    warmup_steps: int = 0


@dataclass(frozen=True)
class TaskSpec:
    type: str
    variants: tuple[Variant, ...]
    execution_count: int | None = None
    batch_size: int | None = None
    max_queued: int | None = None
    target_metric: str | None = None
    target_value: float | None = None
    on_child_error: str = DEFAULT_ON_CHILD_ERROR
    stop_condition: str | None = None
    seed: int = 0
    median_stopping: MedianStopping | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskSpec:
        data = dict(data)
        data["variants"] = tuple(Variant(**v) for v in data.get("variants", ()))
        if data.get("median_stopping"):
            data["median_stopping"] = MedianStopping(**data["median_stopping"])
        return cls(**data)

    def objective(self, metadata: dict[str, Any]) -> float | None:
        """What the task maximises for a child with these latest metadata values: the target
        metric, or minus its distance to `target_value`; None when the child reported no number."""
        if not self.target_metric:
            return None
        value = number(metadata.get(self.target_metric))
        if value is None:
            return None
        return value if self.target_value is None else -abs(value - self.target_value)


def number(value: Any) -> float | None:
    """A metadata value as a finite float; None when it is not a number (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def whole_number(value: Any, what: str, minimum: int = 1) -> int | None:
    """A count in a definition (a whole number, perhaps written as text); a UserInputError names `what`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserInputError(f"{what} must be a whole number, not {value!r}")
    try:
        number_ = float(value)
    except ValueError:
        raise UserInputError(f"{what} must be a whole number, not {value!r}") from None
    if not number_.is_integer() or number_ < minimum:
        raise UserInputError(f"{what} must be a whole number of at least {minimum}, not {value!r}")
    return int(number_)


def finite_number(value: Any, what: str) -> float:
    """A number in a definition (perhaps written as text); a UserInputError names `what`."""
    result = number(value)
    if result is None:
        try:
            result = float(value) if isinstance(value, str) else None
        except ValueError:
            result = None
    if result is None or not math.isfinite(result):
        raise UserInputError(f"{what} must be a number, not {value!r}")
    return result


def distribution_of(rules: dict[str, Any]) -> str:
    """A random rule's distribution: uniform or loguniform (also spelt log-uniform, log_uniform)."""
    return str(rules.get("distribution") or "uniform").lower().replace("-", "").replace("_", "")
