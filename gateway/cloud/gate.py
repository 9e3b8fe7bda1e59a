"""The receiver's door: decode each inbound message, check who sent it, find its session.

Every refusal is answered with an ERROR naming what was wrong and counted; nothing here touches
the store. A message passes only if it decodes, comes from a key still in the allow-list (CURVE),
and is either a HELLO whose claimed id is the key's name or belongs to the session its own
connection opened with a HELLO (:class:`~gateway.cloud.sessions.SessionTable`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import zmq

from gateway.cloud.sessions import Session, SessionTable, connection_of
from gateway.uplink import wire
from gateway.uplink.keys import AllowList

Inbound = wire.Hello | wire.Data | wire.Drop | wire.Result
_TAG = {wire.Data: "DATA", wire.Drop: "DROP", wire.Result: "RESULT"}


@dataclass(frozen=True, slots=True)
class Admitted:
    msg: Inbound
    ident: bytes  # ROUTER routing id
    fd: int
    user: str | None  # ZAP User-Id (CURVE), None in plaintext mode
    session: Session | None  # None only for a HELLO


class Gate:
    """Admits or refuses inbound messages; counts refusals by kind."""

    def __init__(
        self, sessions: SessionTable, allow: AllowList | None, warn: Callable[..., None]
    ) -> None:
        self.sessions = sessions
        self.allow = allow
        self._warn = warn
        self.bad_messages = 0
        self.identity_rejected = 0
        self.unauthorised = 0
        self.hello_required = 0

    def admit(self, frames: list[zmq.Frame]) -> Admitted | wire.Error | None:
        """The admitted message, an ERROR to answer, or None (drop silently)."""
        ident = frames[0].bytes
        fd, user = connection_of(frames[1]) if len(frames) > 1 else (-1, None)
        if len(frames) != 3:
            self.bad_messages += 1
            return wire.Error("bad", f"expected 2 frames [type, body], got {len(frames) - 1}")
        if self.allow is not None and user is None:
            self.bad_messages += 1  # CURVE messages always carry one; be strict anyway
            return None
        try:
            msg = wire.decode([frames[1].bytes, frames[2].bytes])
        except wire.VersionError as exc:
            self.bad_messages += 1
            return wire.Error("version", str(exc))
        except wire.WireError as exc:
            self.bad_messages += 1
            self._warn("bad", "cloud: bad message: %s", exc)
            return wire.Error("bad", str(exc))
        if not isinstance(msg, Inbound):
            self.bad_messages += 1
            return wire.Error("bad", f"unexpected {type(msg).__name__} from a gateway")
        session = self.sessions.lookup(ident, fd, user)
        if user is not None and self.allow is not None and not self.allow.has_name(user):
            self.unauthorised += 1  # its key left the allow-list after it connected
            if session is not None:
                self.sessions.end(session)
            self._warn("unauth", "cloud: %s is no longer in the allow-list; refusing it", user)
            return wire.Error("unauthorised", "key removed from the allow-list")
        if isinstance(msg, wire.Hello):
            if user is not None and msg.gateway != user:
                self.identity_rejected += 1
                self._warn(
                    "identity", "cloud: key of %r claimed to be %r; rejected", user, msg.gateway
                )
                return wire.Error("identity", f"authenticated as {user!r}, not {msg.gateway!r}")
            return Admitted(msg, ident, fd, user, None)
        if session is None:
            self.hello_required += 1
            tag = _TAG[type(msg)]
            self._warn(
                "hello", "cloud: %s without HELLO on this connection (key %s); refused",
                tag, user or "-",
            )  # fmt: skip
            return wire.Error("hello_required", f"{tag} before HELLO on this connection")
        return Admitted(msg, ident, fd, user, session)
