"""Which request field a refusal is about: the services name it, so that the API answers
`{field: [...]}` without reading the message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vh_orch.errors import UserInputError


@contextmanager
def about(field: str) -> Iterator[None]:
    """A UserInputError raised inside, that names no field yet, is about `field` (its type and message
    stay: a NotFound is still a NotFound)."""
    try:
        yield
    except UserInputError as exc:
        if exc.field is None:
            exc.field = field
        raise
