"""What the rule engine asks the rest of the gateway to do: plain, immutable values.

The engine never performs side effects itself; the runtime routes these to the alarm store, the
uplink's priority lane, device writers and the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AlarmRaised:
    """A rule with an alarm action fired. ``values`` holds the points the rule reads (NaN = unknown)."""

    rule: str
    severity: str
    message: str
    ts: float
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlarmCleared:
    """An active alarm's clear condition became true; ``message`` is rendered at clear time."""

    rule: str
    severity: str
    message: str
    ts: float
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Write ``value`` (engineering units) to the writable point ``point``."""

    rule: str
    point: str
    value: float
    ts: float


@dataclass(frozen=True, slots=True)
class LogMessage:
    """A log line from a ``log`` action (level ``info``) or from the engine (``warning``)."""

    rule: str
    level: str
    message: str
    ts: float


Effect = AlarmRaised | AlarmCleared | WriteRequest | LogMessage

__all__ = ["AlarmCleared", "AlarmRaised", "Effect", "LogMessage", "WriteRequest"]
