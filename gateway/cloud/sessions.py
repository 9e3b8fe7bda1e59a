"""Who is talking to the receiver: sessions bound to one connection, and duplicate identities.

A ROUTER routing id is not an identity: after a connection ends, a new connection (with any key)
may present the same id (libzmq's automatic ``0x00`` + 4 bytes, or one set with
``ZMQ_ROUTING_ID``), and even get the same file descriptor. So a session is bound to the
connection that said HELLO: its routing id, its socket fd and, with CurveZMQ, the ZAP User-Id
that every frame carries. A message matches a session only if all three agree, and the socket
monitor ends the sessions of an fd as soon as that connection is accepted anew or disconnects.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

_log = logging.getLogger(__name__)
_WARN_EVERY = 10.0


@dataclass
class Session:
    """One gateway's HELLO on one connection."""

    ident: bytes
    fd: int
    user: str | None  # ZAP User-Id (CurveZMQ); None in plaintext mode
    gateway: str
    started: float


class SessionTable:
    """Live sessions: at most one per connection and one per gateway (the newest HELLO wins)."""

    def __init__(self) -> None:
        self._by_ident: dict[bytes, Session] = {}
        self._by_gateway: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_ident)

    def lookup(self, ident: bytes, fd: int, user: str | None) -> Session | None:
        """The session this message belongs to, or None (then it needs a HELLO first)."""
        s = self._by_ident.get(ident)
        if s is None or s.fd != fd or s.user != user:
            return None
        return s

    def of_gateway(self, gateway: str) -> Session | None:
        return self._by_gateway.get(gateway)

    def establish(self, session: Session) -> Session | None:
        """Bind ``session``; returns the gateway's previous session if it was another one."""
        old_here = self._by_ident.pop(session.ident, None)
        if old_here is not None and self._by_gateway.get(old_here.gateway) is old_here:
            del self._by_gateway[old_here.gateway]
        previous = self._by_gateway.pop(session.gateway, None)
        if previous is not None:
            self._by_ident.pop(previous.ident, None)
        self._by_ident[session.ident] = session
        self._by_gateway[session.gateway] = session
        if previous is None or (previous.ident, previous.fd) == (session.ident, session.fd):
            return None
        return previous

    def end(self, session: Session) -> None:
        if self._by_ident.get(session.ident) is session:
            del self._by_ident[session.ident]
        if self._by_gateway.get(session.gateway) is session:
            del self._by_gateway[session.gateway]

    def connection_ended(self, fd: int) -> int:
        """The socket monitor saw ``fd`` disconnect (or accepted a new connection on it)."""
        gone = [s for s in self._by_ident.values() if s.fd == fd]
        for s in gone:
            self.end(s)
        return len(gone)

    def connected(self, gateway: str) -> bool:
        return gateway in self._by_gateway


@dataclass
class _Watch:
    takeovers: collections.deque[float] = field(default_factory=collections.deque)
    epochs: dict[str, collections.deque[tuple[float, int]]] = field(default_factory=dict)
    alarm_until: float = 0.0  # the current episode lasts while signals keep coming


class DuplicateWatch:
    """Detects two processes using one gateway identity (same key, different queues).

    Signals, per gateway, within ``window`` seconds:

    - a HELLO on a new connection while the gateway's previous connection is still alive
      (``takeovers``; one is a normal reconnect racing a dead link, ``threshold`` are not), or
    - a stream's epoch going back to one seen before a different epoch (two queue files: a queue
      only ever moves to fresh epochs).

    One episode raises one alarm; it ends after ``window`` seconds without a signal.
    """

    def __init__(self, window: float = 30.0, threshold: int = 3, max_gateways: int = 10_000):
        self.window = window
        self.threshold = threshold
        self.max_gateways = max_gateways
        self._watch: collections.OrderedDict[str, _Watch] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._watch)

    def _get(self, gateway: str) -> _Watch:
        w = self._watch.get(gateway)
        if w is None:
            w = self._watch[gateway] = _Watch()
            while len(self._watch) > self.max_gateways:
                self._watch.popitem(last=False)
        else:
            self._watch.move_to_end(gateway)
        return w

    def hello(
        self, gateway: str, streams: dict[str, int], took_over_live: bool, now: float
    ) -> str | None:
        """Feed one accepted HELLO; returns a description when a new episode starts."""
        w = self._get(gateway)
        why: str | None = None
        if took_over_live:
            w.takeovers.append(now)
            while w.takeovers and w.takeovers[0] < now - self.window:
                w.takeovers.popleft()
            if len(w.takeovers) >= self.threshold:
                why = (
                    f"{len(w.takeovers)} HELLOs within {self.window:.0f}s each replaced a "
                    "connection that was still alive"
                )
        for stream, epoch in streams.items():
            seen = w.epochs.get(stream)
            if seen is None:
                if len(w.epochs) >= 2 * 64:  # bounded: a few streams suffice as a witness
                    continue
                seen = w.epochs[stream] = collections.deque(maxlen=8)
            while seen and seen[0][0] < now - self.window:
                seen.popleft()
            epochs = [e for _, e in seen]
            if epochs and epochs[-1] != epoch and epoch in epochs:
                why = why or (
                    f"stream {stream!r} alternates between epochs {epochs[-1]} and {epoch} "
                    f"within {self.window:.0f}s (two queue files)"
                )
            if not epochs or epochs[-1] != epoch:
                seen.append((now, epoch))
        if why is None:
            return None
        new_episode = now >= w.alarm_until
        w.alarm_until = now + self.window
        return why if new_episode else None

    def active(self, gateway: str, now: float) -> bool:
        w = self._watch.get(gateway)
        return w is not None and now < w.alarm_until


class ConnectionMonitor:
    """The ROUTER's socket monitor: connections accepted and ended (their sessions end with
    them), failed handshakes (wrong server key, plaintext client, unknown key) and disconnects
    (dead peers, frames above MAXMSGSIZE) are counted, never fatal.

    :meth:`drain` applies every event already queued; the receiver calls it before each message,
    so a connection's end is known before any message of a later connection on the same fd.
    """

    EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_DISCONNECTED
        | zmq.EVENT_ACCEPTED
    )

    def __init__(self, router: zmq.asyncio.Socket, sessions: SessionTable) -> None:
        self.sessions = sessions
        self.disconnects = 0
        self.handshake_failed = 0
        self._async = router.get_monitor_socket(self.EVENTS)
        self._sync: zmq.Socket | None = zmq.Socket.shadow(self._async.underlying)
        self._warned_at = -_WARN_EVERY

    async def serve(self) -> None:
        """Apply events as they come; run until cancelled."""
        try:
            while True:
                await self._async.poll(zmq.POLLIN)
                self.drain()
        finally:
            self._sync = None
            self._async.close(linger=0)

    def drain(self) -> None:
        while self._sync is not None:
            try:
                event = parse_monitor_message(self._sync.recv_multipart(zmq.NOBLOCK))
            except zmq.ZMQError:  # zmq.Again: nothing queued; others: closing
                return
            kind = event["event"]
            if kind in (zmq.EVENT_ACCEPTED, zmq.EVENT_DISCONNECTED):
                self.sessions.connection_ended(int(event["value"]))
                if kind == zmq.EVENT_DISCONNECTED:
                    self.disconnects += 1
                continue
            self.handshake_failed += 1
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY:  # a flood is counted, not logged
                self._warned_at = now
                endpoint = event.get("endpoint")
                _log.warning(
                    "cloud: handshake failed on %s (wrong server key? not CURVE?)",
                    endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else endpoint,
                )


def connection_of(frame: zmq.Frame) -> tuple[int, str | None]:
    """(socket fd, ZAP User-Id or None) of the connection a frame arrived on."""
    try:
        fd = int(frame.get(zmq.SRCFD))
    except (zmq.ZMQError, TypeError, ValueError):
        fd = -1
    try:
        user: str | None = str(frame.get("User-Id"))
    except zmq.ZMQError:
        user = None
    return fd, user
