"""Stop conditions (`stop-condition: loss < 0.1`) on metadata, evaluated with leval, the safe
expression evaluator valohai-yaml uses: names are metadata keys, values their latest
values; only comparisons, arithmetic, `and`/`or`/`not` and abs/min/max. A name the
execution has not reported yet makes the condition false, never an error."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vh_orch.errors import UserInputError

log = logging.getLogger(__name__)


def _evaluator() -> Any:
    from leval.extras.common_boolean_evaluator import CommonBooleanEvaluator

    return CommonBooleanEvaluator()


def check_condition(expression: Any, what: str) -> str:
    """The expression, if leval can evaluate it; else a UserInputError naming `what`."""
    if not isinstance(expression, str) or not expression.strip():
        raise UserInputError(f"{what} must be an expression such as `loss < 0.1`, not {expression!r}")
    if len(expression) > 1000:
        raise UserInputError(f"{what} is longer than 1000 characters")
    try:
        _evaluator().verify(expression)
    except Exception as exc:  # leval raises its own errors and SyntaxError
        raise UserInputError(f"{what} {expression!r} is not a valid expression: {exc}") from None
    return expression


@dataclass
class Condition:
    """One stop condition, evaluated on each metadata point against the latest values so far."""

    expression: str
    label: str  # "stop condition" or "the task's stop condition"

    def met(self, latest: dict[str, Any]) -> bool:
        values = {k: v for k, v in latest.items() if isinstance(k, str) and type(v) in (int, float, str, bool)}
        try:
            return bool(_evaluator().evaluate(self.expression, values))
        except Exception:  # a key not reported yet, a string compared with a number: not met
            return False

    def reason(self, latest: dict[str, Any]) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in latest.items() if k in self.expression and k != "_time")
        return f"{self.label} `{self.expression}` was met" + (f" ({shown})" if shown else "")
