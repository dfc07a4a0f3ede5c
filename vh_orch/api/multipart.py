"""The package upload's multipart body, parsed as it arrives, in bounded memory.

python-multipart's FormParser keeps a text field whole in memory however long it is (a
300 MiB `description` stayed there). Here file parts go straight to files in a work folder,
a text field longer than MAX_FIELD_BYTES is refused as soon as it passes the bound, and a
body of more than MAX_PARTS parts is refused. Part headers are bounded by python-multipart
itself (a few KiB each, a few per part).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from vh_orch.errors import UserInputError

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16


class MultipartError(UserInputError):
    """The body is not one the upload takes; `field` names the part at fault, when it has a name we know."""

    def __init__(self, message: str, field: str = "non_field_errors") -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Part:
    name: str = ""
    text: bytearray = field(default_factory=bytearray)
    file: IO[bytes] | None = None
    path: Path | None = None


class FormReader:
    """A multipart body fed as it arrives; file parts are written under `work`. `known` names the
    parts the caller takes (a refusal names one of them, never an arbitrary name from the body)."""

    def __init__(self, boundary: bytes, work: Path, known: frozenset[str]) -> None:
        self.form = Form()
        self._work = work
        self._known = known
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._part = _Part()
        self._count = 0
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._on_part_begin, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished, "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end})

    def feed(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> Form:
        self._parser.finalize()
        return self.form

    def close(self) -> None:
        if self._part.file is not None:
            self._part.file.close()

    def _on_part_begin(self) -> None:
        self._count += 1
        if self._count > MAX_PARTS:
            raise MultipartError(f"the upload has more than {MAX_PARTS} parts; send `data`, `yaml_path` and "
                                 "`description`")
        self._headers.clear()
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name")
        if name is None:
            raise MultipartError("a part of the upload has no name (Content-Disposition: form-data; name=...)")
        self._part.name = name.decode("utf-8", "replace")
        if b"filename" in options:
            self._part.path = self._work / f"part-{self._count}"
            self._part.file = open(self._part.path, "wb")  # noqa: SIM115 (closed at the part's end)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.file is not None:
            part.file.write(data[start:end])
            return
        if len(part.text) + end - start > MAX_FIELD_BYTES:
            shown = part.name if part.name in self._known else "non_field_errors"
            raise MultipartError(f"the form field {part.name[:100]!r} is longer than {MAX_FIELD_BYTES // 1024} KiB, "
                                 "the limit for a text field", shown)
        part.text += data[start:end]

    def _on_part_end(self) -> None:
        part = self._part
        if part.file is not None:
            part.file.close()
            part.file = None
            self.form.files[part.name] = part.path  # type: ignore[assignment]
        else:
            self.form.fields[part.name] = part.text.decode("utf-8", "replace")
