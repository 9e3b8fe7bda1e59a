"""Alarm state as seen from outside the engine (in memory in this version)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AlarmState:
    """Current state of one rule's alarm.

    Attributes
    ----------
    rule : str
        Rule name.
    active : bool
        Raised and not yet cleared.
    since : float or None
        Sample time of the last transition (raise or clear); None if it never fired.
    severity : str
        The rule's severity.
    message : str
        The message rendered at the last transition ("" if it never fired).
    """

    rule: str
    active: bool
    since: float | None
    severity: str
    message: str
