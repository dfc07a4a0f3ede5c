"""`dataset://NAME/VERSION` and the names datasets, versions and aliases may have."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vh_orch.errors import UserInputError

SCHEME = "dataset://"
LATEST = "latest"  # `dataset://NAME/latest`: the dataset's newest version by creation
# Names stay short and plain: they appear in URLs, file paths of nobody, and log lines.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", re.ASCII)
NAME_RULE = "1 to 200 letters, digits, '.', '_' or '-', starting with a letter or digit"


@dataclass(frozen=True)
class VersionRef:
    """A dataset version by name (`version` may be LATEST when reading, never when creating)."""

    dataset: str
    version: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.dataset}/{self.version}"


def valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def parse_version_uri(uri: object) -> VersionRef:
    """`dataset://NAME/VERSION` as a VersionRef, or UserInputError saying what a valid one is."""
    text = uri if isinstance(uri, str) else ""
    shown = repr(uri)[:120]
    if not text.startswith(SCHEME):
        raise UserInputError(f"{shown} is not a dataset version URI: write dataset://NAME/VERSION")
    name, sep, version = text[len(SCHEME):].partition("/")
    if not sep or not valid_name(name) or not valid_name(version):
        raise UserInputError(f"{shown} is not a dataset version URI: write dataset://NAME/VERSION, each part "
                             f"{NAME_RULE}")
    return VersionRef(name, version)
