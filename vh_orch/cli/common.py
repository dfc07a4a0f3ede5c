"""What every command shares: settings, the store, printing for people and for scripts.

Light on purpose: rich and the Store are imported when first used, so that the quick path
(quick.py), which only prints JSON, never loads them.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from vh_orch.cli.terminal import visible
from vh_orch.errors import UserInputError
from vh_orch.settings import Settings
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from rich.console import Console

    from vh_orch.orchestrator.store import Store

    console: Console
    err_console: Console


@cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


def __getattr__(name: str) -> Any:
    # `console` (stdout) and `err_console` (stderr), made on first use.
    if name in ("console", "err_console"):
        return _console(name == "err_console")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def settings() -> Settings:
    return Settings.from_env()


def open_store(s: Settings | None = None) -> Store:
    """The store of an initialised installation, or a clear error saying how to create one."""
    from vh_orch.orchestrator.db import head_revision, is_initialised, schema_revision
    from vh_orch.orchestrator.store import Store

    s = s or settings()
    if s.db_url.startswith("sqlite") and "VH_ORCH_DB" not in os.environ and not (s.home / "state.db").exists():
        raise UserInputError(f"vh-orch is not initialised in {s.home}: run `vh-orch init` first")
    store = Store(s.db_url)
    if not is_initialised(s.db_url):
        raise UserInputError("the database has no vh-orch schema: run `vh-orch init` first")
    current, head = schema_revision(s.db_url), head_revision()
    if current is not None and current < head:
        raise UserInputError(f"the database's schema is at revision {current} and this vh-orch needs {head}: run "
                             "`vh-orch init` to upgrade it in place (it keeps everything), then try again")
    return store


def print_error(message: str) -> None:
    """How every command reports a VhOrchError: `error: ...` on stderr, one line however long.
    The message is text, never markup, and its control characters show (terminal.py): it may quote
    anything a user typed (`[/x]`) or an execution wrote."""
    from rich.text import Text

    _console(True).print(Text.assemble(("error:", "bold red"), " ", visible(message)), highlight=False,
                         soft_wrap=True)


def note(message: str, style: str | None = None) -> None:
    """A line for people on stderr (progress, states); plain text, never markup, controls shown."""
    from rich.text import Text

    _console(True).print(Text(visible(message), style=style or ""), highlight=False, soft_wrap=True)


def _cell(value: Any) -> Any:
    """A table cell (or title, or header) as text: values may hold `[...]` that rich would read as markup,
    and control characters that the terminal would act on (terminal.py)."""
    from rich.text import Text

    return Text("" if value is None else visible(str(value)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=_jsonable) + "\n")
    sys.stdout.flush()


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    table = Table(title=None if title is None else _cell(title), show_lines=False)
    for column in columns:  # a column may be named by a metadata key
        table.add_column(_cell(column), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    _console(False).print(table)


def print_fields(title: str, fields: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=_cell(title), show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in fields.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, default=_jsonable) if value else ""
        elif isinstance(value, datetime):
            value = iso(value)
        table.add_row(_cell(key), _cell(value))
    _console(False).print(table)


def human_bytes(size: int) -> str:
    """1536 → "1.5 KiB"."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
