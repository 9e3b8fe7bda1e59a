"""ZAP (ZeroMQ Authentication Protocol, RFC 27) handler for the cloud receiver.

libzmq asks ``inproc://zeromq.zap.01`` of the socket's context whether a CURVE client may connect;
this task answers from an :class:`~gateway.uplink.keys.AllowList`. The User-Id of an accepted
connection is the gateway's name, and every frame from it carries that User-Id, which is the only
identity the receiver trusts. One handler per context: the receiver owns a private context.
"""

from __future__ import annotations

import logging

import zmq
import zmq.asyncio
import zmq.utils.z85

from gateway.uplink.keys import AllowList

_log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


class ZapHandler:
    """Answers ZAP requests for CURVE from an allow-list; counts accepted and rejected keys."""

    def __init__(self, ctx: zmq.asyncio.Context, allow: AllowList) -> None:
        self.allow = allow
        self.accepted = 0
        self.rejected = 0
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        # Bound before the ROUTER binds: libzmq admits every CURVE client when no handler exists.
        self._sock.bind(ZAP_ENDPOINT)

    async def serve(self) -> None:
        """Run until cancelled."""
        while True:
            frames = await self._sock.recv_multipart()
            await self._sock.send_multipart(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 6:
            self.rejected += 1
            return [b"1.0", b"", b"400", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        creds = frames[6:]

        def reply(code: bytes, text: bytes, user: bytes = b"") -> list[bytes]:
            return [version, request_id, code, text, user, b""]

        if version != b"1.0":
            self.rejected += 1
            return reply(b"400", b"unsupported ZAP version")
        if mechanism != b"CURVE" or len(creds) != 1 or len(creds[0]) != 32:
            self.rejected += 1
            _log.warning(
                "cloud: refused %s: mechanism %r", address.decode(errors="replace"), mechanism
            )
            return reply(b"400", b"CURVE required")
        key = zmq.utils.z85.encode(creds[0])
        name = self.allow.lookup(key)
        if name is None:
            self.rejected += 1
            _log.warning(
                "cloud: refused unknown key %s from %s",
                key.decode(),
                address.decode(errors="replace"),
            )
            return reply(b"400", b"key not in the allow-list")
        self.accepted += 1
        return reply(b"200", b"OK", name.encode())

    def close(self) -> None:
        self._sock.close(linger=0)
