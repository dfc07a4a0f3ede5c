"""A read-only view of a SQLite database on the stdlib's sqlite3, for CLI commands that must answer at once.

Importing SQLAlchemy and SQLModel alone takes longer than `vh-orch exec list --json` may.
`QuickReader` answers the reads those commands make with the same method names as Store,
and rows with the same attribute names and values SQLAlchemy gives on SQLite: DATETIME
columns as naive UTC datetimes (`datetime.fromisoformat`), JSON columns parsed, BOOLEAN
columns as bool, everything else as sqlite3 returns it. Every read shares one
transaction, so the answer is one consistent snapshot.

Only a plain `sqlite:///PATH` URL to an existing file qualifies (`sqlite_file`); for any
other database the caller uses Store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# fleet.LIVE_MACHINE as plain strings: the models' enums would load SQLAlchemy.
# tests/test_cli.py keeps the two equal.
LIVE_MACHINE = ("requested", "provisioning", "bootstrapping", "ready", "busy", "terminating")
BUSY_TIMEOUT_S = 30.0
_CONVERTERS = {"DATETIME": datetime.fromisoformat, "JSON": json.loads, "BOOLEAN": bool}


def sqlite_file(url: str) -> Path | None:
    """The existing file a plain `sqlite:///PATH` URL names; None for any other URL.

    URLs with a query, percent-escapes or an in-memory database are left to SQLAlchemy.
    """
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix):]
    if not path or any(c in path for c in "?%") or path.startswith(":memory:"):
        return None
    file = Path(path)
    return file if file.is_file() else None


class QuickReader:
    """Store's read methods for the CLI's quick path. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        # mode=rw: never create a database; autocommit, so the BEGIN below is ours.
        self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                                     isolation_level=None)
        self._conn.execute("BEGIN")
        self._types: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> QuickReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.rollback()
        self._conn.close()

    # -- what the CLI reads ---------------------------------------------------------

    def is_initialised(self) -> bool:
        return self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").fetchone() is not None

    def list_executions(self) -> list[SimpleNamespace]:
        """Every execution, newest first."""
        return self._rows("execution", 'SELECT * FROM execution ORDER BY id DESC')

    def find_execution(self, execution_id: int) -> SimpleNamespace | None:
        rows = self._rows("execution", "SELECT * FROM execution WHERE id = ?", execution_id)
        return rows[0] if rows else None

    def executions_in(self, statuses: Sequence[str]) -> list[SimpleNamespace]:
        marks = ", ".join("?" * len(statuses))
        return self._rows("execution", f"SELECT * FROM execution WHERE status IN ({marks}) ORDER BY id", *statuses)

    def project_names(self) -> dict[int, str]:
        return dict(self._conn.execute("SELECT id, name FROM project").fetchall())

    def environment_names(self) -> dict[int, str]:
        return dict(self._conn.execute("SELECT id, name FROM environment").fetchall())

    def get_project_by_id(self, project_id: int) -> SimpleNamespace:
        return self._one("project", "SELECT * FROM project WHERE id = ?", project_id)

    def get_commit(self, commit_id: int) -> SimpleNamespace:
        return self._one("commit", 'SELECT * FROM "commit" WHERE id = ?', commit_id)

    def get_environment_by_id(self, env_id: int) -> SimpleNamespace:
        return self._one("environment", "SELECT * FROM environment WHERE id = ?", env_id)

    def list_environments(self) -> list[SimpleNamespace]:
        """Environments not removed, by name."""
        return self._rows("environment", "SELECT * FROM environment WHERE removed_at IS NULL ORDER BY name")

    def machine_and_holders(self, machine_id: int) -> tuple[SimpleNamespace | None, list[SimpleNamespace]]:
        rows = self._rows("machine", "SELECT * FROM machine WHERE id = ?", machine_id)
        return (rows[0] if rows else None,
                self._rows("execution", "SELECT * FROM execution WHERE machine_id = ?", machine_id))

    def list_machines(self) -> list[tuple[SimpleNamespace, str]]:
        """Live machines (LIVE_MACHINE) with their environment's name, by id."""
        marks = ", ".join("?" * len(LIVE_MACHINE))
        rows = self._rows("machine", f"SELECT machine.*, environment.name AS environment_name FROM machine "
                                     f"JOIN environment ON environment.id = machine.environment_id "
                                     f"WHERE machine.state IN ({marks}) ORDER BY machine.id", *LIVE_MACHINE)
        return [(row, row.environment_name) for row in rows]

    def recent_failures(self, environment_id: int, limit: int = 20) -> list[SimpleNamespace]:
        """An environment's latest launch failures, oldest first."""
        rows = self._rows("launch_failure", "SELECT * FROM launch_failure WHERE environment_id = ? "
                                            "ORDER BY id DESC LIMIT ?", environment_id, limit)
        return rows[::-1]

    def outputs_of(self, execution_id: int) -> list[SimpleNamespace]:
        return self._rows("output", "SELECT * FROM output WHERE execution_id = ? ORDER BY name", execution_id)

    # -- rows -------------------------------------------------------------------------

    def _one(self, table: str, sql: str, *params: Any) -> SimpleNamespace:
        rows = self._rows(table, sql, *params)
        if not rows:
            raise LookupError(f"no {table} row for {params}")
        return rows[0]

    def _rows(self, table: str, sql: str, *params: Any) -> list[SimpleNamespace]:
        """Rows as objects, each column converted the way SQLAlchemy converts its declared type."""
        cursor = self._conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        types = self._column_types(table)
        convert = [(i, types[name]) for i, name in enumerate(names) if name in types]
        out = []
        for row in cursor.fetchall():
            values = list(row)
            for i, fn in convert:
                if values[i] is not None:
                    values[i] = fn(values[i])
            out.append(SimpleNamespace(**dict(zip(names, values))))
        return out

    def _column_types(self, table: str) -> dict[str, Any]:
        if table not in self._types:
            columns = self._conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            self._types[table] = {name: _CONVERTERS[decl.upper()] for _, name, decl, *_ in columns
                                  if decl.upper() in _CONVERTERS}
        return self._types[table]
