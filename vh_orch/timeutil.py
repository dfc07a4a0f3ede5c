"""Time helpers: vh-orch keeps aware UTC datetimes and shows them as ISO-8601 with Z."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware datetime; a naive one (as SQLite hands them back) is taken as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

