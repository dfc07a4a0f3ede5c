"""Execution-made text on the operator's terminal: data, never commands to the terminal.

An execution's log lines, titles, metadata keys and values, names and status reasons are written by
whoever submitted it. Printed as they are, escape sequences among them would act on the operator's
terminal: set its title, clear the screen, rewrite what is shown, put text on the clipboard (OSC 52).
`visible` shows every control character as an escape (`\\x1b`) instead; line feeds and tabs stay.
"""

from __future__ import annotations

import re

# C0 controls but tab and line feed, DEL, C1 controls; and the bidirectional overrides and isolates,
# which reorder how a line reads without being visible themselves.
_ESCAPED = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0),
            *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_TABLE = {c: (f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}") for c in _ESCAPED}
_CONTROL = re.compile("[" + "".join(re.escape(chr(c)) for c in _ESCAPED) + "]")
_PLAIN_ASCII = bytes([0x09, 0x0A, *range(0x20, 0x7F)])


def visible(text: str) -> str:
    """`text` with control characters made visible: ESC as `\\x1b`, BEL as `\\x07`, CR as `\\x0d`,
    U+202E as `\\u202e`; line feeds and tabs kept. Backslashes are left as they are."""
    # A log block is a megabyte of text: plain ASCII is told apart at C speed (the bytes left once
    # every printable one is deleted), and a regular expression finds the few others.
    if text.isascii() and not text.encode().translate(None, _PLAIN_ASCII):
        return text
    return _CONTROL.sub(lambda m: _TABLE[ord(m.group())], text)
