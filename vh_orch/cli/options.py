"""Options shared by the commands that start work (`exec run`, `task run`, `pipeline run`), declared once.
Its own module: cli/common.py stays free of Typer for the quick read path."""

from __future__ import annotations

from typing import Annotated

import typer

ProjectOption = Annotated[str, typer.Option("--project", help="Project name")]
CommitOption = Annotated[str | None, typer.Option("--commit", help="Branch, tag or sha (default: default branch)")]
AdhocOption = Annotated[
    str | None,
    typer.Option("--adhoc", help="Run the files of a folder without version control (default folder: .)",
                 flag_value=".", show_default=False),
]
