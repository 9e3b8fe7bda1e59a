"""The receiver's PUB fan-out: committed records, gap notices and alarms.

Three frames per message: ``[topic, header, payload]``. Records and gaps go to
``<gateway>/<stream>`` with header ``{v, gateway, stream, epoch, seq}`` (a gap adds
``gap: [from, to, reason]`` and has an empty payload); alarms go to ``<gateway>/!alarm`` (or
``!alarm`` for the receiver itself) with header ``{v, gateway, alarm, detail, ts}``, which record
subscribers skip (no ``stream``/``seq``). Stream names cannot contain ``!``, so the topics never
collide. Only committed data is published.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack
import zmq
import zmq.asyncio

from gateway.uplink import wire

PUB_HWM = 100_000  # records queued per subscriber before PUB drops


class Fanout:
    """A bound PUB socket, or nothing (``bind`` None): every method is then a no-op."""

    def __init__(self, ctx: zmq.asyncio.Context, bind: str | None) -> None:
        self.endpoint: str | None = None
        self._pub: zmq.asyncio.Socket | None = None
        # PUB never blocks (it drops at the HWM) and is never read from: a plain non-blocking
        # send on the same socket costs a fraction of an asyncio one (no future per record).
        self._send: zmq.Socket | None = None
        if bind:
            pub = ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            # A burst is one DATA (up to 1000 records) per gateway; the default HWM of 1000
            # would drop within a single burst. Still bounded: slow subscribers lose data.
            pub.setsockopt(zmq.SNDHWM, PUB_HWM)
            pub.bind(bind)
            self.endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
            self._pub = pub
            self._send = zmq.Socket.shadow(pub.underlying)

    async def records(
        self, gateway: str, stream: str, epoch: int, first_seq: int, payloads: Sequence[bytes]
    ) -> None:
        if self._send is None:
            return
        topic = f"{gateway}/{stream}".encode()
        send = self._send.send_multipart
        for i, payload in enumerate(payloads):
            send([topic, _header(gateway, stream, epoch, first_seq + i), payload], zmq.NOBLOCK)

    async def gap(
        self, gateway: str, stream: str, epoch: int, first: int, last: int, reason: str
    ) -> None:
        if self._pub is not None:
            header = _header(gateway, stream, epoch, last, gap=[first, last, reason])
            await self._pub.send_multipart([f"{gateway}/{stream}".encode(), header, b""])

    async def alarm(self, gateway: str, kind: str, detail: str, ts: float) -> None:
        if self._pub is not None:
            topic = f"{gateway}/!alarm" if gateway else "!alarm"
            body = {"v": wire.PROTOCOL_VERSION, "gateway": gateway, "alarm": kind}
            body.update(detail=detail, ts=ts)
            await self._pub.send_multipart([topic.encode(), msgpack.packb(body), b""])

    def close(self) -> None:
        if self._pub is not None:
            self._send = None
            self._pub.close(linger=0)
            self._pub = None


def _header(gateway: str, stream: str, epoch: int, seq: int, **extra: object) -> bytes:
    body = {"v": wire.PROTOCOL_VERSION, "gateway": gateway, "stream": stream, "epoch": epoch}
    body["seq"] = seq
    body.update(extra)
    return msgpack.packb(body)
