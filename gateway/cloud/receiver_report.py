"""What the cloud receiver reports about itself: counters, memory held, per-gateway state
(``gateway cloud``'s status lines, its tests, and whoever embeds :class:`CloudReceiver`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.cloud.downlink import CommandBook
from gateway.cloud.gate import Gate
from gateway.cloud.limits import BoundedDict, GatewayState
from gateway.cloud.sessions import ConnectionMonitor, DuplicateWatch, SessionTable
from gateway.cloud.store import CloudStore
from gateway.cloud.zap import ZapHandler
from gateway.uplink.keys import AllowList


class ReceiverReport:
    """The receiver's status methods (the receiver provides the attributes declared here)."""

    idle_timeout: float
    store: CloudStore
    allow: AllowList | None
    _store_call: Callable[..., Awaitable[Any]]
    limit_refused: int
    duplicate_identity: int
    store_replaced: int
    store_lost_seqs: int
    group_commits: int
    group_messages: int
    _clock: Callable[[], float]
    _gate: Gate
    _zap: ZapHandler | None
    _monitor: ConnectionMonitor | None
    _sessions: SessionTable
    _dup: DuplicateWatch
    _gateways: BoundedDict[str, GatewayState]
    _hw: BoundedDict[tuple[str, str, int], int]
    _commands: CommandBook

    def counters(self) -> dict[str, int]:
        """Receiver-wide rejections and alarms: none of them stops the receiver."""
        zap = self._zap
        return {
            "bad_messages": self._gate.bad_messages,
            "auth_rejected": zap.rejected if zap else 0,
            "auth_accepted": zap.accepted if zap else 0,
            "handshake_failed": self._monitor.handshake_failed if self._monitor else 0,
            "disconnects": self._monitor.disconnects if self._monitor else 0,
            "identity_rejected": self._gate.identity_rejected,
            "unauthorised": self._gate.unauthorised,
            "hello_required": self._gate.hello_required,
            "limit_refused": self.limit_refused,
            "duplicate_identity": self.duplicate_identity,
            "store_replaced": self.store_replaced,
            "store_lost_seqs": self.store_lost_seqs,
            "group_commits": self.group_commits,
            "group_messages": self.group_messages,
        }

    def sizes(self) -> dict[str, int]:
        """How much the receiver holds in memory (every one bounded by :class:`Limits`)."""
        return {
            "gateways": len(self._gateways),
            "sessions": len(self._sessions),
            "hw_cache": len(self._hw),
            "commands": len(self._commands),
            "streams": sum(len(st.hw) for st in self._gateways.values()),
            "duplicate_watch": len(self._dup),
        }

    def status(self) -> dict[str, dict[str, object]]:
        """Per gateway: connected, last_seen, streams {stream: {epoch, hw}}, rates, counters."""
        now = self._clock()
        out: dict[str, dict[str, object]] = {}
        for gateway, st in sorted(self._gateways.items()):
            out[gateway] = {
                "connected": self._sessions.connected(gateway)
                and now - st.last_seen <= self.idle_timeout,
                "last_seen": st.last_seen,
                "streams": {s: {"epoch": e, "hw": h} for s, (e, h) in sorted(st.hw.items())},
                "records": st.records,
                "records_per_s": st.rate(now),
                "duplicates": st.duplicates,
                "nacks": st.nacks,
                "dropped": st.dropped,
                "sessions": st.sessions,
                "duplicate_identity": self._dup.active(gateway, now),
            }
        return out

    def session_of(self, gateway: str) -> dict[str, object] | None:
        """``{started, last_seen}`` of ``gateway``'s live session here, or None (not connected)."""
        session = self._sessions.of_gateway(gateway)
        state = self._gateways.get(gateway)
        if session is None or state is None:
            return None
        return {"started": session.started, "last_seen": state.last_seen}

    def last_seen(self, gateway: str) -> float | None:
        state = self._gateways.get(gateway)
        return state.last_seen if state is not None else None

    async def knows(self, gateway: str) -> bool:
        """Whether ``gateway`` exists for this receiver: seen since start, in the allow-list, or
        with streams in the store."""
        if gateway in self._gateways or (self.allow is not None and self.allow.has_name(gateway)):
            return True
        streams = await self._store_call(self.store.gateways)
        return any(st.gateway == gateway for st in streams)

    def cancel_command(self, command_id: str) -> None:
        """Stop waiting for (and resending) ``command_id``: its caller gave up."""
        self._commands.cancel(command_id)
