"""Reading an execution's output metadata files where its outputs are (this host's folder, or the machine
that uploads them itself) and describing the output rows with it. Bad metadata never fails an execution:
every problem becomes a log line and the rest goes on."""

from __future__ import annotations

import base64
import logging
import shlex
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from vh_orch.orchestrator.datasets.metadata import (
    MAX_TOTAL_BYTES,
    PREFIX,
    parse_metadata,
    read_limit,
    reserved,
)
from vh_orch.orchestrator.masking import masked_value
from vh_orch.orchestrator.models import Output

log = logging.getLogger(__name__)

Sources = dict[str, bytes | int | None]


def _budgeted(files: Iterable[tuple[str, int]]) -> tuple[list[str], Sources]:
    """Which metadata files to read (within each one's limit and the total), and the sizes of the ones too
    large to read."""
    wanted: list[str] = []
    skipped: Sources = {}
    total = 0
    for rel, size in sorted(files):
        if size > read_limit(rel):
            skipped[rel] = size
            continue
        total += size
        if total > MAX_TOTAL_BYTES:
            skipped[rel] = None
            continue
        wanted.append(rel)
    return wanted, skipped


def read_local(folder: Path, files: Iterable[tuple[str, int]]) -> Sources:
    """The metadata files under a local outputs folder (rel, size), read within their limits."""
    wanted, sources = _budgeted(files)
    for rel in wanted:
        try:
            with (folder / rel).open("rb") as f:
                sources[rel] = f.read(read_limit(rel) + 1)
        except OSError as exc:
            log.info("reading output metadata %s failed: %s", rel, exc)
            sources[rel] = None
    return sources


def read_remote(run_script: Callable[[str], str], outputs_folder: str, files: Iterable[tuple[str, int]]) -> Sources:
    """The metadata files of an outputs folder on a machine (rel, size), read within their limits through
    one script; each comes back base64-encoded on a line of its own ("!" for one that cannot be read)."""
    wanted, sources = _budgeted(files)
    if not wanted:
        return sources
    lines = [f"cd {shlex.quote(outputs_folder)} || exit 1",
             'r() { if [ -f "$2" ] && [ ! -L "$2" ]; then head -c "$1" -- "$2" | base64 | tr -d "\\n"; echo; '
             'else echo "!"; fi; }']
    lines += [f"r {read_limit(rel) + 1} {shlex.quote(rel)}" for rel in wanted]
    try:
        answers = run_script("\n".join(lines) + "\n").split("\n")
    except Exception as exc:  # the machine's trouble: the outputs are still stored, undescribed
        log.info("reading output metadata in %s failed: %s", outputs_folder, exc)
        answers = []
    for index, rel in enumerate(wanted):
        answer = answers[index] if index < len(answers) else "!"
        try:
            sources[rel] = None if answer == "!" else base64.b64decode(answer, validate=True)
        except ValueError:
            sources[rel] = None
    return sources


def describe(rows: Sequence[Output], sources: Sources, note: Callable[[str], None],
             masked: list[bytes] | None = None) -> None:
    """Give each output row its metadata (`properties`) and `valohai.tags` from the metadata files read;
    every problem is a line through `note` (the execution's log). `masked`: the project's secret values'
    forms (masking.py), masked in every key and text before anything is kept."""
    try:
        merged, problems = parse_metadata(sources, [row.name for row in rows])
        for row in rows:
            properties: dict[str, Any] | None = merged.get(row.name)
            if properties is None:
                continue
            properties = masked_value(properties, masked or [])
            found, more = reserved(row.name, properties)
            problems += more
            row.properties = properties
            row.tags = found.tags
    except Exception as exc:  # never the execution's failure: its outputs are stored without metadata
        log.exception("reading output metadata failed")
        problems = [f"{PREFIX}could not be read ({exc}); the outputs are stored without it"]
        for row in rows:
            row.properties = row.tags = None
    for line in problems:
        note(line)
