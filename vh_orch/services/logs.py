"""An execution's whole log, whichever face asks: read through in pages (a log of millions of lines
never sits in memory at once), searched for a plain substring, written out as text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from vh_orch.errors import UserInputError

if TYPE_CHECKING:
    from vh_orch.orchestrator.store.logs import Event
    from vh_orch.orchestrator.store import Store

PAGE = 5000
MAX_SEARCH_CHARS = 200  # a search is a plain substring: no pattern language, so no pattern can be slow
MAX_MATCHES = 1000


def log_events(store: Store, execution_id: int, page: int = PAGE) -> Iterator[Event]:
    """Every event stored for the execution (log lines and status changes), in seq order, a page
    of stored blocks at a time."""
    last = 0
    while True:
        events = store.events_page(execution_id, after=last, limit=page)
        if not events:
            return
        yield from events
        last = events[-1].seq


def log_text(store: Store, execution_id: int) -> Iterator[str]:
    """The log as `vh-orch exec logs --raw` prints it: each stdout and stderr line, in order."""
    for event in log_events(store, execution_id):
        if event.kind == "log":
            yield event.text + "\n"


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
    for event in log_events(store, execution_id):
        if event.kind == "log" and needle in event.text.casefold():
            if len(found) == limit:
                return found, True
            found.append(event)
    return found, False
