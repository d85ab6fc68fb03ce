"""Time stamps as statuses, publish results and log uploads write them: UTC, to the second."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> str:
    """This moment's time stamp."""
    return datetime.now(UTC).strftime(FORMAT)


def parse(stamp: str | None) -> datetime | None:
    """An RFC 3339 time stamp (``...Z`` or with an offset) as an aware datetime; None for none."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def from_ms(ms: int) -> str:
    """The time stamp of ``ms`` milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(FORMAT)
