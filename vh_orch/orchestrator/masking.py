"""Masking secret values in what an execution prints, before a byte of it is stored.

Masking works on the raw bytes of each stream, ahead of the line splitter, so a value is caught
however the command's output was cut into reads: the bytes at the end of a read that could be the
start of a value are held back until the next read shows whether they are (only those: a line that
cannot begin a value is passed on at once). A value that spans lines is also masked line by line
(docker's timestamps come between its lines), and so is its JSON-escaped form (metadata lines).

Masking is a guard against accidents (a script that prints its configuration); a command that means
to leak a value can always encode it first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

MASK = b"***"
MIN_LINE_PART = 4  # the lines of a many-line value masked on their own: not the shortest (`}`, `--`)


def masked_forms(values: Iterable[str]) -> list[bytes]:
    """The byte strings to mask for these values, longest first (a longer form is replaced before a
    shorter one inside it)."""
    forms: set[bytes] = set()
    for value in values:
        if not value:
            continue
        forms.add(value.encode())
        escaped = json.dumps(value, ensure_ascii=False)[1:-1]
        forms.add(escaped.encode())
        if "\n" in value:
            forms.update(line.rstrip("\r").encode() for line in value.split("\n")
                         if len(line.rstrip("\r")) >= MIN_LINE_PART)
    return sorted(forms, key=len, reverse=True)


def mask_text(text: str, forms: list[bytes]) -> str:
    """One whole text with every form replaced (for lines of vh-orch's own)."""
    if not forms:
        return text
    data = text.encode()
    for form in forms:
        data = data.replace(form, MASK)
    return data.decode("utf-8", "replace")


def masked_value(value: Any, forms: list[bytes]) -> Any:
    """A parsed JSON value (a metadata point, an output's metadata) with every form masked in its keys and
    texts, and a number that shows a value replaced by the mask: what the bytes could not catch (a value
    written with \\u escapes) is caught once it is parsed."""
    if not forms:
        return value
    if isinstance(value, str):
        return mask_text(value, forms)
    if isinstance(value, dict):
        return {mask_text(str(k), forms): masked_value(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [masked_value(v, forms) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        shown = json.dumps(value)
        return MASK.decode() if mask_text(shown, forms) != shown else value
    return value


class StreamMask:
    """One stream's bytes in, the same bytes with every secret form replaced by `***` out."""

    def __init__(self, forms: list[bytes]) -> None:
        self.forms = forms
        self._held = b""  # the end of the last read that could begin a form

    def feed(self, data: bytes) -> bytes:
        if not self.forms:
            return data
        buf = self._held + data if self._held else data
        for form in self.forms:
            if form in buf:
                buf = buf.replace(form, MASK)
        cut = self._hold_from(buf)
        self._held = buf[cut:]
        return buf[:cut]

    def end(self) -> bytes:
        """What was held back: the stream ended, so it is no value."""
        held, self._held = self._held, b""
        return held

    def _hold_from(self, buf: bytes) -> int:
        """Where the longest end of buf that is a proper beginning of a form starts (len(buf): none)."""
        cut = len(buf)
        for form in self.forms:
            first = form[:1]
            at = buf.find(first, max(0, len(buf) - len(form) + 1))
            while 0 <= at < cut:
                if form.startswith(buf[at:]):
                    cut = at
                    break
                at = buf.find(first, at + 1)
        return cut
