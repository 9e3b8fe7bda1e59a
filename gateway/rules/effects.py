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


@dataclass(frozen=True, slots=True)
class AlarmAcked:
    """An operator (or the cloud, for them) acknowledged the alarm of ``rule``."""

    rule: str
    severity: str
    by: str
    ts: float
    active: bool  # still active when acknowledged (False: acked after it returned to normal)


@dataclass(frozen=True, slots=True)
class EventRaised:
    """An ``event`` action: goes upstream on the events (priority) stream."""

    rule: str
    severity: str
    message: str
    ts: float
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PointSet:
    """A ``set`` action updated the virtual point ``point`` (the engine already applied it)."""

    rule: str
    point: str
    point_id: int
    value: float
    ts: float


Effect = (
    AlarmRaised | AlarmCleared | AlarmAcked | EventRaised | WriteRequest | PointSet | LogMessage
)

__all__ = [
    "AlarmAcked", "AlarmCleared", "AlarmRaised", "Effect", "EventRaised", "LogMessage", "PointSet",
    "WriteRequest", "effect_record",
]  # fmt: skip


def effect_record(eff: Effect) -> dict[str, object]:
    """A JSON-able dict of an effect (``gateway rules test`` output, test case files)."""
    kind = {
        AlarmRaised: "alarm_raised", AlarmCleared: "alarm_cleared", AlarmAcked: "alarm_acked",
        EventRaised: "event", WriteRequest: "write", PointSet: "set", LogMessage: "log",
    }[type(eff)]  # fmt: skip
    out: dict[str, object] = {"ts": eff.ts, "kind": kind, "rule": eff.rule}
    for name in ("severity", "message", "point", "value", "level", "by"):
        if hasattr(eff, name):
            out[name] = getattr(eff, name)
    return out
