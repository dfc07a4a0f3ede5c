"""Project secrets as executions get them: every secret of the project as an environment variable,
decrypted only here, in the daemon, just before its command starts (a step's or run's own variable
of the same name wins)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vh_orch.errors import UserInputError

if TYPE_CHECKING:
    from sqlalchemy import Row

    from vh_orch.orchestrator.models import ProjectSecret

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
MAX_VALUE_BYTES = 64 * 1024  # a key, a token, a PEM file; an environment variable is no place for more
# Names the runner sets itself or that would change how the command's shell and libraries run.
RESERVED_PREFIXES = ("VH_", "VALOHAI_")
RESERVED = frozenset({"PATH", "HOME", "PYTHONUNBUFFERED", "LD_PRELOAD", "LD_LIBRARY_PATH"})


def check_secret_name(name: str) -> str:
    """An environment variable's name, not one vh-orch sets itself; UserInputError otherwise."""
    if NAME.fullmatch(name) is None:
        raise UserInputError(f"{name[:100]!r} is not an environment variable name: letters, digits and _, not "
                             "starting with a digit, at most 128", field="name")
    if name in RESERVED or name.upper().startswith(RESERVED_PREFIXES):
        raise UserInputError(f"{name!r} is a name vh-orch or the command's shell sets itself: choose another",
                             field="name")
    return name


def check_secret_value(value: str) -> str:
    if not value:
        raise UserInputError("a secret's value cannot be empty", field="value")
    if "\0" in value:
        raise UserInputError("a secret's value cannot hold a NUL byte (no environment variable can)", field="value")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise UserInputError(f"a secret's value is at most {MAX_VALUE_BYTES // 1024} KiB", field="value")
    return value


def secret_values(home: Path, rows: Sequence[ProjectSecret] | Sequence[Row[Any]]) -> dict[str, str]:
    """A project's secrets (their rows: Store.project_with_secrets) by name, decrypted (ConfigError
    when the installation's key does not open one). None of it is ever written anywhere but the
    command's environment."""
    if not rows:
        return {}
    from vh_orch.keyring import KeyRing

    keys = KeyRing.load(home)
    return {row.name: keys.decrypt(row.value).decode("utf-8", "replace") for row in rows}


def merge_secrets(env: dict[str, str], secrets: Mapping[str, str], own: Mapping[str, object]) -> list[str]:
    """Add the secrets to `env` except where the execution has a variable of its own by that name
    (`own`: the step's and the run's); the names of the secrets that were not used, for the log."""
    shadowed = sorted(name for name in secrets if name in own)
    env.update({name: value for name, value in secrets.items() if name not in own})
    return shadowed
