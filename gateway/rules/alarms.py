"""Alarm lifecycle (active/cleared x acknowledged/unacknowledged) and its on-disk state.

The four states, as in ISA-18.2::

    normal ──raise──▶ active+unacked ──ack──▶ active+acked
      ▲                    │ clear                 │ clear
      │                    ▼                       ▼
      └──────ack──── cleared+unacked            normal

A raise while cleared+unacked starts a new, unacknowledged episode. The engine raises once and
clears once per episode; acknowledgement comes from outside (``RuleEngine.ack``).

Persistence: the state must commit together with the alarm event that reports the transition.
Saved first (as a separate file once was), a crash before the event committed made the cloud see
"raised, raised" with no clear; saved after, it would see a clear without a raise.
:class:`QueueAlarmStore` therefore keeps the states in the uplink queue's database and hands
every snapshot to the uplink's writer, which commits it in the same transaction as the events
submitted in the same event-loop turn. Saving does no I/O on the caller's thread: a full or
read-only disk keeps the state in memory and retries with the events. :class:`AlarmStore` (a JSON
file) remains for tools and for migrating ``alarms.json`` into the queue once.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

_log = logging.getLogger("gateway.rules")

#: Format version of the alarm state file.
STORE_VERSION = 1


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
    acked : bool
        Acknowledged since the last raise (True for an alarm that never fired).
    acked_by, acked_ts
        Who acknowledged it and when (``""``/None if not acknowledged).
    """

    rule: str
    active: bool
    since: float | None
    severity: str
    message: str
    acked: bool = True
    acked_by: str = ""
    acked_ts: float | None = None

    @property
    def state(self) -> str:
        """``normal``, ``active_unacked``, ``active_acked`` or ``cleared_unacked``."""
        if self.active:
            return "active_acked" if self.acked else "active_unacked"
        return "normal" if self.acked else "cleared_unacked"


class AlarmPersistence(Protocol):
    """Where a :class:`~gateway.rules.engine.RuleEngine` keeps alarm states across restarts."""

    def load(self) -> dict[str, AlarmState]: ...

    def save(self, states: list[AlarmState]) -> None: ...


class StateBackend(Protocol):
    """State committed with records: :class:`gateway.uplink.client.Uplink` provides it."""

    def stage_state(self, key: str, value: bytes) -> None: ...

    def load_state(self, key: str) -> bytes | None: ...


def encode_states(states: list[AlarmState]) -> bytes:
    data: dict[str, Any] = {"version": STORE_VERSION, "alarms": [asdict(s) for s in states]}
    return json.dumps(data, indent=1, sort_keys=True).encode()


def decode_states(raw: bytes | str, where: str) -> dict[str, AlarmState]:
    """States by rule name; an unreadable document is logged and treated as empty."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        _log.error("alarm state %s unreadable (%s); starting with no active alarms", where, exc)
        return {}
    out: dict[str, AlarmState] = {}
    if not isinstance(doc, dict) or doc.get("version") != STORE_VERSION:
        _log.error("alarm state %s has an unknown format; ignored", where)
        return out
    for item in doc.get("alarms", []):
        try:
            state = AlarmState(**item)
        except TypeError:
            continue
        out[state.rule] = state
    return out


class QueueAlarmStore:
    """Alarm states in the uplink queue's database, committed with their alarm events.

    Parameters
    ----------
    backend
        The uplink (``stage_state``/``load_state``).
    legacy
        A former ``alarms.json``: read once when the queue holds no alarm state yet (and staged
        into the queue), renamed to ``alarms.json.migrated`` once the queue holds it.
    """

    KEY = "alarms"

    def __init__(self, backend: StateBackend, legacy: str | Path | None = None) -> None:
        self.backend = backend
        self.legacy = Path(legacy) if legacy is not None else None

    def load(self) -> dict[str, AlarmState]:
        raw = self.backend.load_state(self.KEY)
        legacy = self.legacy
        if raw is None:
            if legacy is None or not legacy.exists():
                return {}
            states = AlarmStore(legacy).load()
            _log.info("alarm state: migrating %s into the uplink queue", legacy)
            self.save(list(states.values()))
            return states
        if legacy is not None and legacy.exists():
            try:
                legacy.rename(legacy.with_name(legacy.name + ".migrated"))
            except OSError as exc:
                _log.warning("alarm state: %s not renamed after migration: %s", legacy, exc)
        return decode_states(raw, "in the uplink queue")

    def save(self, states: list[AlarmState]) -> None:
        """Hand the snapshot to the uplink; it commits with this loop turn's alarm events."""
        self.backend.stage_state(self.KEY, encode_states(states))


class AlarmStore:
    """Alarm states of one gateway in a JSON file (the former ``<data_dir>/alarms.json``).

    Parameters
    ----------
    path : str or Path
        The file; its directory is created if needed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, AlarmState]:
        """States by rule name; an unreadable file is logged and treated as empty."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            _log.error(
                "alarm state %s unreadable (%s); starting with no active alarms", self.path, exc
            )
            return {}
        return decode_states(raw, str(self.path))

    def save(self, states: list[AlarmState]) -> None:
        """Replace the file atomically with ``states``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(encode_states(states))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
