"""Executions: listing them in one order, whichever face asks (`vh-orch exec list --sort` and
`GET /api/v0/executions/?ordering=`): by a column, a metadata key or a parameter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vh_orch.errors import UserInputError
from vh_orch.orchestrator.metadata_limits import MAX_KEY_CHARS, valid_key
from vh_orch.orchestrator.store.queries import PARAMETER_PREFIX, SORT_COLUMNS, ExecutionFilter

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Execution
    from vh_orch.orchestrator.store import Store


@dataclass(frozen=True)
class Ordering:
    """By a column, by a metadata key's latest value (numbers only: executions whose value is
    missing, or is no number, come last either way) or by a parameter (`parameters.NAME`: numbers
    by value, then text; executions without it last); ties by id, in the same direction."""

    key: str
    descending: bool

    @property
    def by_metadata(self) -> bool:
        return self.key not in SORT_COLUMNS and not self.by_parameter

    @property
    def by_parameter(self) -> bool:
        return self.key.startswith(PARAMETER_PREFIX)

    def __str__(self) -> str:
        return ("-" if self.descending else "") + self.key


def ordering(text: str, default: str) -> Ordering:
    """`-counter`, `accuracy`, `-metadata.accuracy`, `parameters.learning_rate` (`-` first: descending);
    blank: `default`. A key that is neither a column nor a possible metadata key or parameter name is a
    UserInputError naming `ordering`. (A metadata key that starts `parameters.` is `metadata.parameters.…`.)"""
    spec = text.strip() or default
    key = spec.lstrip("-+")
    if key.startswith(PARAMETER_PREFIX):
        if not valid_key(key.removeprefix(PARAMETER_PREFIX)):
            raise UserInputError(f"{text[:100]!r} names no possible parameter (1 to {MAX_KEY_CHARS} characters, "
                                 "no quote, backslash or control character); e.g. -parameters.learning_rate",
                                 field="ordering")
    elif key not in SORT_COLUMNS:
        key = key.removeprefix("metadata.")
        if not valid_key(key):
            raise UserInputError(f"{text[:100]!r} is neither a column ({', '.join(SORT_COLUMNS)}) nor a metadata key "
                                 f"(1 to {MAX_KEY_CHARS} characters, no quote, backslash or control character); "
                                 "e.g. -counter or -metadata.accuracy", field="ordering")
    return Ordering(key, spec.startswith("-"))


def list_executions(store: Store, where: ExecutionFilter, order: Ordering, limit: int | None = None,
                    offset: int = 0) -> tuple[int, list[Execution]]:
    """(how many match, the page of them from `offset`, at most `limit`: None is all) in `order`."""
    return store.query_executions(where, sort=str(order), limit=limit, offset=offset)  # type: ignore[arg-type]
