"""The quick path: `exec list --json`, `exec info ID --json` and `status --json` in a blink.

Scripts poll these, so they answer straight from SQLite through the stdlib (QuickReader),
without loading Typer, rich, SQLAlchemy or the orchestrator. They print exactly what the
Typer commands print: both shape their answer with services/views.py.

The normal path stays the reference. `answer` takes only these exact argument shapes on a
`sqlite:///` database file that has the schema; for anything else (other arguments or
options, --help, PostgreSQL, an unknown id, a database it cannot read) it prints nothing and
returns False, and the command runs through Typer as always, which also says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vh_orch.cli.common import print_json, settings
from vh_orch.orchestrator.store.quick import QuickReader, sqlite_file
from vh_orch.services.views import execution_info, execution_summary, status_rows

Read = Callable[[QuickReader], Any]


def answer(argv: list[str]) -> bool:
    """Print the answer for argv and return True, or print nothing and return False."""
    read = _read_for(argv)
    if read is None:
        return False
    path = sqlite_file(settings().db_url)
    if path is None:
        return False
    try:
        with QuickReader(path) as reader:
            value = read(reader) if reader.is_initialised() else None
    except Exception:  # whatever surprised the quick read, the normal path answers or explains
        return False
    if value is None:
        return False
    print_json(value)
    return True


def _read_for(argv: list[str]) -> Read | None:
    match argv:
        case ["exec", "list", "--json"]:
            return _exec_list
        case ["exec", "info", "--json", ident] | ["exec", "info", ident, "--json"] if _is_id(ident):
            return lambda reader: _exec_info(reader, int(ident))
        case ["status", "--json"]:
            return status_rows
    return None


def _is_id(text: str) -> bool:
    # Plain digits only; anything else click may read as a number (or refuse) goes to Typer.
    return text.isascii() and text.isdigit()


def _exec_list(reader: QuickReader) -> list[dict[str, Any]]:
    executions = reader.list_executions()
    projects, envs = reader.project_names(), reader.environment_names()
    return [execution_summary(e, projects, envs) for e in executions]


def _exec_info(reader: QuickReader, execution_id: int) -> dict[str, Any] | None:
    execution = reader.find_execution(execution_id)
    return None if execution is None else execution_info(reader, execution)
