"""The `vh-orch` command line: thin commands over the orchestrator's services.

`main` answers `exec list --json`, `exec info ID --json` and `status --json` on the quick
path (quick.py) when it can; everything else goes to the Typer app (commands.py).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from vh_orch.cli.quick import answer
from vh_orch.errors import VhOrchError


def main() -> None:
    # Everything vh-orch writes (its home, the database, outputs, mirrors, packages) is its user's
    # alone; what containers must read is opened explicitly (runtimes.open_to_image_user).
    os.umask(0o077)
    if answer(sys.argv[1:]):
        return
    from vh_orch.cli.commands import app

    try:
        app()
    except VhOrchError as exc:
        from vh_orch.cli.common import print_error

        print_error(str(exc))
        sys.exit(1)


def __getattr__(name: str) -> Any:
    if name == "app":  # the Typer app, for tools that look for `vh_orch.cli.app`
        from vh_orch.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
