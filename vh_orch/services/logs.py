"""An execution's whole log, whichever face asks: read through a few stored blocks at a time (a log of
millions of lines never sits in memory at once), searched for a plain substring, written out as text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from vh_orch.errors import UserInputError
from vh_orch.orchestrator.store.logs import Event, block_events, block_text

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store

MAX_SEARCH_CHARS = 200  # a search is a plain substring: no pattern language, so no pattern can be slow
MAX_MATCHES = 1000


def log_text(store: Store, execution_id: int) -> Iterator[str]:
    """The log as `vh-orch exec logs --raw` prints it: each stdout and stderr line, in order, a
    stored block (thousands of lines) at a time."""
    for piece in store.stored_log(execution_id):
        if not isinstance(piece, Event):
            yield block_text(piece)
        elif piece.kind == "log":
            yield piece.text + "\n"


def search_text(text: str) -> str:
    """A search as given, checked: not empty, at most MAX_SEARCH_CHARS characters."""
    if not text or len(text) > MAX_SEARCH_CHARS:
        raise UserInputError(f"a search is 1 to {MAX_SEARCH_CHARS} characters (a plain substring)",
                             field="search")
    return text


def search_log(store: Store, execution_id: int, text: str, limit: int = MAX_MATCHES) -> tuple[list[Event], bool]:
    """The log lines holding `text` (case-insensitive, literally: `.*` matches a dot and a star),
    the first `limit` of them; and whether there were more."""
    needle = search_text(text).casefold()
    found: list[Event] = []
    for piece in store.stored_log(execution_id):
        if isinstance(piece, Event):
            events = [piece] if piece.kind == "log" else []
        elif needle in piece.texts.casefold():  # a block without it is passed over whole
            events = block_events(piece)
        else:
            continue
        for event in events:
            if needle in event.text.casefold():
                if len(found) == limit:
                    return found, True
                found.append(event)
    return found, False
