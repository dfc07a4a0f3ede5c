"""Output metadata as valohai-utils writes it, read from an execution's outputs folder at its end.

Two forms, merged (a file's sidecar keys win over its jsonl keys, a later jsonl line's over an earlier's):
- `valohai.metadata.jsonl` (or `outputs.metadata.jsonl`) in the outputs root, one line per file:
  `{"file": "PATH relative to outputs", "metadata": {...}}`;
- a sidecar `FILE.metadata.json` beside FILE, holding FILE's metadata object.

As on Valohai, these files describe outputs and are not outputs themselves: they are not stored (a
`X.metadata.json` with no X beside it is an ordinary output). Reserved keys: `valohai.tags` (a list of
strings), `valohai.alias` (a name: `datum://NAME` then means this output), `valohai.dataset-versions` (a list
of `dataset://NAME/VERSION` strings or `{"uri", "from", "exclude", "start_fresh", ...}` objects).

Everything here is bounded (file sizes, lines, nesting, the size of a file's merged metadata, list
lengths) and nothing here raises on bad input: what cannot be used is skipped, and a problem line says
what and why (the runner writes it to the execution's log). Pure: the caller reads the files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from vh_orch.errors import UserInputError
from vh_orch.orchestrator.datasets.uris import LATEST, NAME_RULE, VersionRef, parse_version_uri, valid_name

JSONL_NAMES = ("valohai.metadata.jsonl", "outputs.metadata.jsonl")
SIDECAR_SUFFIX = ".metadata.json"
MAX_JSONL_BYTES = 16 * 1024 * 1024
MAX_SIDECAR_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024  # every metadata file of one execution together
MAX_LINES = 100_000
MAX_DEPTH = 32  # nesting of objects and lists
MAX_PROPERTIES_CHARS = 256 * 1024  # one file's merged metadata, as JSON
MAX_TAGS = 100
MAX_TAG_CHARS = 256
MAX_VERSIONS = 100  # dataset versions one file joins
MAX_EXCLUDE = 10_000
PREFIX = "vh-orch: output metadata: "

TAGS_KEY = "valohai.tags"
ALIAS_KEY = "valohai.alias"
VERSIONS_KEY = "valohai.dataset-versions"


@dataclass(frozen=True)
class VersionRequest:
    """One `valohai.dataset-versions` item: the version a file joins, and how the version starts."""

    ref: VersionRef
    base: VersionRef | None = None  # `from`: start from that version's files
    exclude: tuple[str, ...] = ()  # file names (or paths) of the base not carried over
    start_fresh: bool = False  # ignore `from`


@dataclass(frozen=True)
class Reserved:
    """What a file's metadata asks of vh-orch."""

    tags: list[str] | None = None
    alias: str | None = None
    versions: list[VersionRequest] = field(default_factory=list)


def metadata_files(rels: Iterable[str]) -> set[str]:
    """Which of the files in an outputs folder are output metadata (read, never stored as outputs)."""
    names = set(rels)
    found = {rel for rel in names if rel in JSONL_NAMES}
    for rel in names:
        if rel.endswith(SIDECAR_SUFFIX) and rel[: -len(SIDECAR_SUFFIX)] in names:
            found.add(rel)
    return found


def read_limit(rel: str) -> int:
    """The most bytes of a metadata file that are read (one more tells that it is too large)."""
    return MAX_JSONL_BYTES if rel in JSONL_NAMES else MAX_SIDECAR_BYTES


def parse_metadata(sources: Mapping[str, bytes | int | None],
                   outputs: Iterable[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each output's merged metadata from the metadata files read, and problem lines. `sources`: per
    metadata file, at most read_limit(rel) + 1 of its bytes, or its size when it was too large to read, or
    None when it could not be read. `outputs`: the stored outputs' paths."""
    known = set(outputs)
    merged: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    total = 0
    sidecars = sorted(rel for rel in sources if rel not in JSONL_NAMES)
    for rel in [*(n for n in JSONL_NAMES if n in sources), *sidecars]:
        data = sources[rel]
        if data is None:
            problems.append(f"{PREFIX}{rel}: could not be read; skipped")
            continue
        if isinstance(data, int) or len(data) > read_limit(rel):
            problems.append(f"{PREFIX}{rel}: larger than {read_limit(rel):,} bytes; skipped")
            continue
        total += len(data)
        if total > MAX_TOTAL_BYTES:
            problems.append(f"{PREFIX}{rel}: the metadata files together pass {MAX_TOTAL_BYTES:,} bytes; "
                            "this one and the rest are skipped")
            break
        if rel in JSONL_NAMES:
            _read_jsonl(rel, data, known, merged, problems)
        else:
            target = rel[: -len(SIDECAR_SUFFIX)]
            value, problem = _loads(data)
            if problem is None and not isinstance(value, dict):
                problem = "is not a JSON object"
            if problem is not None:
                problems.append(f"{PREFIX}{rel}: {problem}; skipped")
            elif target not in known:
                problems.append(f"{PREFIX}{rel}: {target!r} is not a stored output; skipped")
            else:
                merged.setdefault(target, {}).update(value)
    for rel in list(merged):
        if _json_chars(merged[rel]) > MAX_PROPERTIES_CHARS:
            problems.append(f"{PREFIX}{rel!r}: its metadata is larger than {MAX_PROPERTIES_CHARS:,} characters "
                            "as JSON; skipped")
            del merged[rel]
    return merged, problems


def _read_jsonl(rel: str, data: bytes, known: set[str], merged: dict[str, dict[str, Any]],
                problems: list[str]) -> None:
    for number, raw in enumerate(data.splitlines(), 1):
        if number > MAX_LINES:
            problems.append(f"{PREFIX}{rel}: more than {MAX_LINES:,} lines; the rest are skipped")
            return
        if not raw.strip():
            continue
        where = f"{PREFIX}{rel} line {number}"
        value, problem = _loads(raw)
        if problem is None and not (isinstance(value, dict) and isinstance(value.get("metadata"), dict)):
            problem = 'is not {"file": PATH, "metadata": {...}}'
        if problem is None:
            target, problem = _output_path(value.get("file"))
        if problem is not None:
            problems.append(f"{where}: {problem}; skipped")
        elif target not in known:
            problems.append(f"{where}: {target!r} is not a stored output; skipped")
        else:
            merged.setdefault(target, {}).update(value["metadata"])


def _output_path(value: object) -> tuple[str, str | None]:
    """A jsonl line's `file` as a path relative to the outputs folder, or a problem."""
    if not isinstance(value, str) or not value or len(value) > 4096:
        return "", '"file" is not a path relative to the outputs folder'
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts or "\\" in value or "\0" in value:
        return "", f'"file" {value[:200]!r} leaves the outputs folder'
    return pure.as_posix(), None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def _loads(data: bytes) -> tuple[Any, str | None]:
    """JSON, no deeper than MAX_DEPTH, with finite numbers only; or a problem."""
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite)
    except RecursionError:
        return None, f"nests deeper than {MAX_DEPTH} levels"
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        return None, "is not JSON"
    if _depth(value, 0) > MAX_DEPTH:
        return None, f"nests deeper than {MAX_DEPTH} levels"
    return value, None


def _depth(value: Any, at: int) -> int:
    """How deep value nests, stopping once past MAX_DEPTH."""
    if at > MAX_DEPTH or not isinstance(value, dict | list):
        return at
    children = value.values() if isinstance(value, dict) else value
    return max((_depth(child, at + 1) for child in children), default=at + 1)


def _json_chars(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def reserved(rel: str, properties: Mapping[str, Any]) -> tuple[Reserved, list[str]]:
    """The reserved keys of one output's metadata, checked; problem lines for what is skipped."""
    problems: list[str] = []
    where = f"{PREFIX}{rel!r}: "
    tags = None
    if TAGS_KEY in properties:
        value = properties[TAGS_KEY]
        if (isinstance(value, list) and len(value) <= MAX_TAGS
                and all(isinstance(t, str) and 0 < len(t) <= MAX_TAG_CHARS for t in value)):
            tags = list(dict.fromkeys(value))
        else:
            problems.append(f"{where}{TAGS_KEY} is not a list of at most {MAX_TAGS} texts of 1 to {MAX_TAG_CHARS} "
                            "characters; no tags")
    alias = None
    if ALIAS_KEY in properties:
        if valid_name(properties[ALIAS_KEY]):
            alias = properties[ALIAS_KEY]
        else:
            problems.append(f"{where}{ALIAS_KEY} is not a name ({NAME_RULE}); no alias")
    versions: list[VersionRequest] = []
    if VERSIONS_KEY in properties:
        items = properties[VERSIONS_KEY]
        items = items if isinstance(items, list) else [items]  # one item alone: as if listed
        if len(items) > MAX_VERSIONS:
            problems.append(f"{where}{VERSIONS_KEY} names more than {MAX_VERSIONS} versions; only the first "
                            f"{MAX_VERSIONS} are used")
        for item in items[:MAX_VERSIONS]:
            try:
                request = version_request(item)
            except UserInputError as exc:
                problems.append(f"{where}{VERSIONS_KEY}: {exc}; skipped")
                continue
            if request not in versions:
                versions.append(request)
    return Reserved(tags=tags, alias=alias, versions=versions), problems


def version_request(item: object) -> VersionRequest:
    """One `valohai.dataset-versions` item, or UserInputError saying what is wrong with it."""
    if isinstance(item, str):
        item = {"uri": item}
    if not isinstance(item, dict):
        raise UserInputError(f"{repr(item)[:100]} is neither a dataset://NAME/VERSION text nor an object with 'uri'")
    ref = parse_version_uri(item.get("uri"))
    if ref.version == LATEST:
        raise UserInputError(f"{ref.uri!r}: {LATEST!r} names the newest version and cannot be created")
    base = None
    if item.get("from") is not None:
        base = parse_version_uri(item["from"])
        if base.dataset != ref.dataset:
            raise UserInputError(f"{ref.uri!r}: 'from' {base.uri!r} is a version of another dataset; a version "
                                 "starts only from a version of its own dataset")
    exclude = item.get("exclude") or []
    if not (isinstance(exclude, list) and len(exclude) <= MAX_EXCLUDE
            and all(isinstance(e, str) and 0 < len(e) <= 4096 for e in exclude)):
        raise UserInputError(f"{ref.uri!r}: 'exclude' is not a list of at most {MAX_EXCLUDE:,} file names")
    start_fresh = item.get("start_fresh", False)
    if not isinstance(start_fresh, bool):
        raise UserInputError(f"{ref.uri!r}: 'start_fresh' is not true or false")
    return VersionRequest(ref=ref, base=base, exclude=tuple(exclude), start_fresh=start_fresh)
