"""Alarm lifecycle (active/cleared x acknowledged/unacknowledged) and its on-disk state.

The four states, as in ISA-18.2::

    normal ──raise──▶ active+unacked ──ack──▶ active+acked
      ▲                    │ clear                 │ clear
      │                    ▼                       ▼
      └──────ack──── cleared+unacked            normal

A raise while cleared+unacked starts a new, unacknowledged episode. The engine raises once and
clears once per episode; acknowledgement comes from outside (``RuleEngine.ack``).

Persistence: :class:`AlarmStore` keeps every alarm's state in one small JSON file, rewritten
atomically (temp file, fsync, rename, fsync of the directory) on every transition, so a gateway
restarted after a power cut neither raises an active alarm twice nor forgets an unacked one.
Alarm transitions are rare (human scale), so a rewrite per transition costs nothing that matters.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


class AlarmStore:
    """Alarm states of one gateway in a JSON file (``<data_dir>/alarms.json``).

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
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _log.error(
                "alarm state %s unreadable (%s); starting with no active alarms", self.path, exc
            )
            return {}
        out: dict[str, AlarmState] = {}
        if not isinstance(raw, dict) or raw.get("version") != STORE_VERSION:
            _log.error("alarm state %s has an unknown format; ignored", self.path)
            return out
        for item in raw.get("alarms", []):
            try:
                state = AlarmState(**item)
            except TypeError:
                continue
            out[state.rule] = state
        return out

    def save(self, states: list[AlarmState]) -> None:
        """Replace the file atomically with ``states``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"version": STORE_VERSION, "alarms": [asdict(s) for s in states]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
