"""Durations in config files: a number of seconds or a string with a unit (``500ms``, ``1.5s``).

Every time value in the config goes through :func:`parse_duration`, so one grammar holds
everywhere and the runtime only ever sees float seconds.
"""

from __future__ import annotations

import math
import re

#: Seconds per unit suffix. Longer suffixes first so ``ms`` is not read as ``m`` + junk.
UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

#: The grammar of duration strings, shared with the JSON Schema (editors check the same thing).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)$"

#: Human text listing what :func:`parse_duration` accepts, used in error messages and docs.
ACCEPTED_FORMS = "a number of seconds (2, 0.5) or a string with a unit: 500ms, 2s, 1.5s, 5m, 1h"

_DURATION_RE = re.compile(DURATION_PATTERN)


def parse_duration(value: object) -> float:
    """Convert a config duration to float seconds.

    Parameters
    ----------
    value : int, float or str
        A number of seconds, or digits followed by one of the units ``ms``, ``s``, ``m``, ``h``
        (no sign, no spaces inside, e.g. ``"500ms"``, ``"1.5s"``, ``"5m"``).

    Returns
    -------
    float
        Seconds; may be zero or negative for numbers (callers apply their own bounds).

    Raises
    ------
    ValueError
        If the value is not one of the accepted forms; the message lists them.
    """
    if isinstance(value, bool):  # bool is an int subclass; `timeout: yes` is a mistake
        raise ValueError(f"expected a duration, {ACCEPTED_FORMS}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite duration, {ACCEPTED_FORMS}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value.strip())
        if match is not None:
            number, unit = float(match.group(1)), match.group(3)
            # Divide for ms: 7 / 1000 is exactly 0.007, 7 * 0.001 is not.
            return number / 1000.0 if unit == "ms" else number * UNITS[unit]
    raise ValueError(f"expected a duration, {ACCEPTED_FORMS}")


def format_duration(seconds: float) -> str:
    """Render seconds in the shortest unit form that :func:`parse_duration` reads back exactly.

    Used for defaults in the generated docs, so ``0.05`` reads as ``50ms``.
    """
    for suffix, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        count = round(seconds / scale, 9)
        if count >= 1 and count == int(count):
            return f"{int(count)}{suffix}"
    millis = round(seconds * 1000.0, 6)
    if 0 < seconds < 1 and millis == int(millis):
        return f"{int(millis)}ms"
    return f"{seconds:g}s"
