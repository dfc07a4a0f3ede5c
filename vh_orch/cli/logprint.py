"""An execution's log on the terminal or into a pipe: `exec logs` and `exec run --follow`.

Lines are written a stored block at a time (a megabyte of text, thousands of lines) and flushed when
the output changes stream (stdout to stderr) and at the end of each read, never per line: a million
stored lines go to a pipe in about a second. `--json` writes one object per line, spelt exactly as
`json.dumps` spells it.
"""

from __future__ import annotations

import sys
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, TextIO

from vh_orch.cli.terminal import visible
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import LogBlock
    from vh_orch.orchestrator.store import Store
    from vh_orch.orchestrator.store.logs import Event


class AttemptMarks:
    """Where each attempt of a retried execution begins, and why the one before it ended, from its
    status events: `started` (attempt 1), `queued: <why>` (a requeue), `started: attempt N`."""

    def __init__(self) -> None:
        self.attempt = 0

    def see(self, status_text: str) -> str | None:
        status, _, reason = status_text.partition(": ")
        if status == "started":
            self.attempt += 1
            return f"attempt {self.attempt} started"
        if status == "queued" and self.attempt and reason:
            return f"attempt {self.attempt} ended: {reason}"
        return None


def note(text: str) -> None:
    from vh_orch.cli.common import note as common_note

    common_note(f"-- {text}", style="dim")


def json_line(seq: int, time: str | None, kind: str, stream: str | None, text: str) -> str:
    """`json.dumps({"seq":, "time":, "kind":, "stream":, "text":})` and a newline, without the dict."""
    stream_json = "null" if stream is None else f'"{stream}"'
    time_json = "null" if time is None else f'"{time}"'
    return (f'{{"seq": {seq}, "time": {time_json}, "kind": "{kind}", "stream": {stream_json}, '
            f'"text": {encode_basestring_ascii(text)}}}\n')


class LogPrinter:
    """Writes events and stored blocks in order. show_status: status changes as dim notes (to
    stderr); marks: where each attempt of a retried execution starts (not with --json)."""

    def __init__(self, json_lines: bool = False, raw: bool = False, show_status: bool = False,
                 marks: AttemptMarks | None = None) -> None:
        self.json_lines = json_lines
        self.raw = raw
        self.show_status = show_status
        self.marks = None if json_lines else marks
        self.last: TextIO | None = None

    def _out(self, stream: str | None) -> TextIO:
        out = sys.stderr if stream == "stderr" and not self.json_lines else sys.stdout
        if self.last is not None and self.last is not out:
            self.last.flush()  # the other stream's lines first: the order holds on a terminal
        self.last = out
        return out

    def event(self, event: Event) -> None:
        if self.json_lines:
            self._out(None).write(json_line(event.seq, iso(event.time), event.kind, event.stream, event.text))
        elif event.kind == "log":
            self._out(event.stream).write((event.text if self.raw else visible(event.text)) + "\n")
        else:
            if self.show_status:
                self._status(event.text)
            mark = self.marks.see(event.text) if self.marks is not None else None
            if mark:
                self._status(mark)

    def block(self, block: LogBlock, after: int = 0) -> None:
        from vh_orch.orchestrator.store.logs import block_rows, block_text  # the store loads only when used

        if self.json_lines:
            stream = block.stream
            self._out(None).write("".join(json_line(seq, time, "log", stream, text)
                                          for seq, time, text in block_rows(block, after)))
            return
        text = block_text(block, after)
        self._out(block.stream).write(text if self.raw else visible(text))

    def _status(self, text: str) -> None:
        self.flush()
        note(text)

    def flush(self) -> None:
        if self.last is not None:
            self.last.flush()


def print_stored(store: Store, printer: LogPrinter, execution_id: int, after: int) -> int:
    """Print what is stored after seq `after`; returns the last seq printed (`after` if nothing was)."""
    from vh_orch.orchestrator.store.logs import Event

    for piece in store.stored_log(execution_id, after):
        if isinstance(piece, Event):
            printer.event(piece)
            after = piece.seq
        else:
            printer.block(piece, after)
            after = piece.last_seq
    return after
