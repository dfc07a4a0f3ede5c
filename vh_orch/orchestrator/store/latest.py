"""An execution's latest metadata values (`metadata_latest`), updated in the database a batch of
keys at a time: never read back and rewritten whole from Python for each batch of log lines.

The column is JSON (text on SQLite, `json` on PostgreSQL). Each key of the batch replaces its
value, whatever it was (a number, a text, a list, an object or null), as dict.update would:
- SQLite: json_set() with one path per key (`$."key"`; metadata_limits.valid_key keeps every
  key nameable so), which keeps every number as it was written;
- PostgreSQL: the old pairs whose key the batch does not set, then the batch's pairs, through
  json_each/json_object_agg (on `json`, so numbers keep their text too: jsonb's `||` would turn
  1e+20 into a 21-digit integer).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import JSON, cast, func, literal, select, union_all
from sqlalchemy.sql.elements import ColumnElement

from vh_orch.orchestrator.metadata_limits import valid_key
from vh_orch.orchestrator.models import Execution
from vh_orch.orchestrator.store.database import table_of

# SQLite's default build takes at most 127 arguments a function: a json_set() per 50 keys.
SQLITE_KEYS_A_CALL = 50


def latest_merged(dialect: str, latest: dict[str, Any]) -> ColumnElement[Any] | None:
    """The new value of metadata_latest with `latest`'s keys set; None when no key may be set."""
    values = {key: value for key, value in latest.items() if valid_key(key)}
    if not values:
        return None
    column = table_of(Execution).c.metadata_latest
    if dialect == "sqlite":
        merged: ColumnElement[Any] = func.coalesce(column, "{}")
        items = list(values.items())
        for start in range(0, len(items), SQLITE_KEYS_A_CALL):
            args: list[Any] = []
            for key, value in items[start:start + SQLITE_KEYS_A_CALL]:
                args += [literal(f'$."{key}"'), func.json(literal(json.dumps(value)))]
            merged = func.json_set(merged, *args)
        return merged
    patch = cast(literal(json.dumps(values)), JSON)
    old = func.json_each(column).table_valued("key", "value")
    new = func.json_each(patch).table_valued("key", "value")
    kept = select(old.c.key, old.c.value).where(old.c.key.not_in(select(func.json_object_keys(patch))))
    pairs = union_all(kept, select(new.c.key, new.c.value)).subquery()
    return select(func.coalesce(func.json_object_agg(pairs.c.key, pairs.c.value), cast(literal("{}"), JSON))
                  ).scalar_subquery()
