"""Which parts of a metadata point are metadata: bounded keys per execution, bounded keys and values.

Every line an execution prints is a log line; a stdout line that is a JSON object is also a
metadata point, and its keys update the execution's latest values (`metadata_latest`, which
every list of executions and every sort by a key reads). An execution printing ever-new
keys would grow that without bound, so:

- a key is 1 to MAX_KEY_CHARS characters with no quote, backslash or control character (a
  key the database's JSON paths can name: sorting by a key and the latest-value update address
  it by path);
- a value whose JSON is longer than MAX_VALUE_CHARS is not metadata (a metric is a number or a
  short text; a large structure belongs in an output file);
- an execution has at most `max_keys` distinct keys (`vh-orch serve --max-metadata-keys`); past
  that, a point's new keys are not metadata, its known keys still are.

What is not metadata stays in its log line, never dropped; a point left with no key is no
point. The first time a rule keeps something out, the execution's log gets one warning line
saying so (WARNINGS; the ingester writes it once per execution).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import Any

MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 1024
DEFAULT_MAX_KEYS = 1000
_BAD_KEY = re.compile(r'["\\\x00-\x1f\x7f]')


def valid_key(key: str) -> bool:
    """A key that can be metadata (and be sorted by): see the module's rules."""
    return 0 < len(key) <= MAX_KEY_CHARS and _BAD_KEY.search(key) is None


def _json_chars(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def warning(rule: str, max_keys: int) -> str:
    """The log line that says a rule kept something out of the metadata (always the same text, so
    that a daemon that re-attaches can tell it was written)."""
    if rule == "keys":
        return (f"vh-orch: this execution has {max_keys} distinct metadata keys, the most it may have "
                "(vh-orch serve --max-metadata-keys): new keys printed from now on are not metadata "
                "(their lines stay log lines)")
    if rule == "key":
        return (f"vh-orch: a metadata key of more than {MAX_KEY_CHARS} characters, or with a quote, backslash or "
                "control character, is not metadata (its line stays a log line)")
    return (f"vh-orch: a metadata value longer than {MAX_VALUE_CHARS} characters as JSON is not metadata "
            "(its line stays a log line); keep large results in an output file")


class MetadataGate:
    """The keys one execution has, and what of each new point is metadata. Thread-safe."""

    def __init__(self, known_keys: Iterable[str], max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.keys = {key for key in known_keys if valid_key(key)}
        self.broken: set[str] = set()  # rules that kept something out, so far
        self._lock = threading.Lock()

    def admit(self, point: dict[str, Any], line_chars: int) -> tuple[dict[str, Any] | None, list[str]]:
        """The point with only its keys that are metadata (None when none is), and the rules
        broken for the first time by this point ("keys", "key", "value")."""
        check_values = line_chars > MAX_VALUE_CHARS  # a value is never longer than its line
        kept: dict[str, Any] = {}
        broken: list[str] = []
        with self._lock:
            for key, value in point.items():
                rule = None
                if key not in self.keys and not valid_key(key):
                    rule = "key"
                elif check_values and _json_chars(value) > MAX_VALUE_CHARS:
                    rule = "value"
                elif key not in self.keys:
                    if len(self.keys) >= self.max_keys:
                        rule = "keys"
                    else:
                        self.keys.add(key)
                if rule is None:
                    kept[key] = value
                elif rule not in self.broken:
                    self.broken.add(rule)
                    broken.append(rule)
        return kept or None, broken
