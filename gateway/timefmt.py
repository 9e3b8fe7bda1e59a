"""Readable sample times for terminals and plots: ISO 8601 in UTC, the date only when it changes.

Samples carry seconds since the epoch; ``1764763206.123`` means nothing to an operator, while
``2025-12-03T12:00:06.123Z`` followed by ``12:00:07.400`` does. Times before 1973 (less than
:data:`RELATIVE_BELOW`) are taken as seconds from the start of a hand-written recording and shown
as such (``4.000 s``), not as a day in 1970.
"""

from __future__ import annotations

from datetime import datetime, timezone

#: Timestamps below this are relative seconds (hand-written test recordings), not epoch times.
RELATIVE_BELOW = 1e8


def is_relative(ts: float) -> bool:
    return not abs(ts) >= RELATIVE_BELOW  # NaN counts as relative: printed as a number


def iso(ts: float) -> str:
    """``2025-12-03T12:00:06.123Z`` (millisecond precision, UTC)."""
    if is_relative(ts):
        return f"{ts:.3f} s"
    dt = datetime.fromtimestamp(ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class Stamps:
    """Formats a sequence of times: the full ISO time first and whenever the date changes,
    ``HH:MM:SS.fff`` otherwise. Output widths are fixed so columns line up."""

    def __init__(self) -> None:
        self._day: str | None = None

    def __call__(self, ts: float) -> str:
        if is_relative(ts):
            return f"{ts:>12.3f} s"
        text = iso(ts)
        day = text[:10]
        if day != self._day:
            self._day = day
            return text
        return f"{text[11:23]:>24}"
