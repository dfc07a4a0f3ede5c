"""Log lines and metadata points, from raw bytes."""

from __future__ import annotations

import io

import pytest

from vh_orch.orchestrator.logs import MAX_LINE_BYTES, iter_lines, parse_metadata


def lines(data: bytes, max_bytes: int = MAX_LINE_BYTES) -> list[str]:
    return list(iter_lines(io.BufferedReader(io.BytesIO(data)), max_bytes))  # type: ignore[arg-type]


def test_lines_are_split_on_newlines_and_a_missing_last_newline_keeps_the_line() -> None:
    assert lines(b"a\nb\r\n\nlast") == ["a", "b", "", "last"]


def test_a_long_line_is_split_at_the_limit_and_nothing_is_lost() -> None:
    data = b"x" * 25 + b"\nshort\n"
    assert lines(data, max_bytes=10) == ["x" * 10, "x" * 10, "xxxxx", "short"]


def test_a_multibyte_character_is_never_cut_at_the_split() -> None:
    text = "é" * 9  # 18 bytes
    out = lines(text.encode() + b"\n", max_bytes=5)
    assert "".join(out) == text
    assert all("\ufffd" not in piece for piece in out)


def test_bytes_that_are_not_utf8_are_replaced() -> None:
    assert lines(b"ok \xff\xfe end\n") == ["ok \ufffd\ufffd end"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"loss": 0.5, "epoch": 1}', {"loss": 0.5, "epoch": 1}),
        ('  {"nested": {"a": [1, 2]}}  ', {"nested": {"a": [1, 2]}}),
        ("[1, 2, 3]", None),
        ("42", None),
        ('"a string"', None),
        ('{"loss": NaN}', None),
        ('{"loss": Infinity}', None),
        ('{"loss": -Infinity}', None),
        ('{"loss": 0.5', None),
        ("{not json}", None),
        ("plain text", None),
        ("", None),
    ],
)
def test_only_json_objects_are_metadata(line: str, expected: dict | None) -> None:  # type: ignore[type-arg]
    assert parse_metadata(line) == expected
