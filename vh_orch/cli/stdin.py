"""Values read from standard input (`--password-stdin`, `--value-stdin`, `--repo-token-stdin`, ...).

One rule for every `--...-stdin` option: the whole of standard input is the value, less one
trailing newline (`\n` or `\r\n`), so that `echo VALUE | vh-orch ...` and `vh-orch ... < file` give
VALUE. A value never comes from an argument: it would show in `ps` and in shell history.
"""

from __future__ import annotations

import sys
from typing import IO

from vh_orch.errors import UserInputError


def drop_one_newline(text: str) -> str:
    """`text` less one trailing newline (`\\r\\n` or `\\n`); other whitespace is part of the value."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def read_stdin_value(option: str, stream: IO[str] | None = None) -> str:
    """What standard input holds, less one trailing newline; UserInputError naming `option` when
    there is nothing."""
    value = drop_one_newline((stream or sys.stdin).read())
    if not value:
        raise UserInputError(f"{option}: standard input is empty: pipe the value in (echo VALUE | vh-orch ...)")
    return value
