"""Subscriber: consume the cloud receiver's PUB fan-out.

PUB/SUB drops messages when a subscriber is slow or (re)joins late; every record carries its
(gateway, stream, epoch, seq), so this helper detects such holes and reports them (``gaps``
counter and ``on_gap`` callback). Filling a hole from the store (catch-up via
``CloudStore.records``) is a later step; the store already holds everything, exactly once.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import zmq
import zmq.asyncio

from gateway.uplink import wire


@dataclass(frozen=True, slots=True)
class Record:
    gateway: str
    stream: str
    epoch: int
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Gap:
    """Records ``first``..``last`` of (gateway, stream, epoch) were not received."""

    gateway: str
    stream: str
    epoch: int
    first: int
    last: int


class Subscriber:
    """SUB socket with a topic prefix filter (``"gw1/"``, ``"gw1/events"`` or ``""`` for all).

    The first record seen of a (gateway, stream, epoch) sets the baseline: records published
    before this subscriber joined are not reported as a gap.
    """

    def __init__(
        self, connect: str, topic: str = "", on_gap: Callable[[Gap], None] | None = None
    ) -> None:
        self._sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sock.connect(connect)
        self._on_gap = on_gap
        self._last: dict[tuple[str, str, int], int] = {}
        self.gaps = 0  # number of missing records seen so far
        self.received = 0
        self.malformed = 0

    async def recv(self) -> Record:
        """The next record; malformed messages are counted and skipped."""
        while True:
            frames = await self._sock.recv_multipart()
            record = self._parse(frames)
            if record is None:
                self.malformed += 1
                continue
            self._track(record)
            self.received += 1
            return record

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Record:
        return await self.recv()

    def _parse(self, frames: list[bytes]) -> Record | None:
        if len(frames) != 3:
            return None
        try:
            header = msgpack.unpackb(frames[1], raw=False)
        except Exception:
            return None
        if not isinstance(header, dict) or header.get("v") != wire.PROTOCOL_VERSION:
            return None
        gw, stream, epoch, seq = (header.get(k) for k in ("gateway", "stream", "epoch", "seq"))
        if not (isinstance(gw, str) and isinstance(stream, str)):
            return None
        if not (isinstance(epoch, int) and isinstance(seq, int)):
            return None
        return Record(gw, stream, epoch, seq, bytes(frames[2]))

    def _track(self, rec: Record) -> None:
        key = (rec.gateway, rec.stream, rec.epoch)
        last = self._last.get(key)
        if last is not None and rec.seq > last + 1:
            self.gaps += rec.seq - last - 1
            if self._on_gap is not None:
                self._on_gap(Gap(rec.gateway, rec.stream, rec.epoch, last + 1, rec.seq - 1))
        if last is None or rec.seq > last:
            self._last[key] = rec.seq

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def run_subscribe(
    connect: str,
    topic: str = "",
    decode: Callable[[bytes], object] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Print every record (one line each) until ``stop`` is set — ``gateway subscribe``."""

    def report(gap: Gap) -> None:
        print(
            f"GAP {gap.gateway}/{gap.stream} epoch {gap.epoch}: {gap.first}..{gap.last} missing",
            file=sys.stderr,
            flush=True,
        )

    stop = stop or asyncio.Event()
    with Subscriber(connect, topic, on_gap=report) as sub:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(sub.recv())
                await asyncio.wait({nxt, stopper}, return_when="FIRST_COMPLETED")
                if not nxt.done():
                    nxt.cancel()
                    break
                rec = nxt.result()
                try:
                    shown = decode(rec.payload) if decode else rec.payload
                except Exception as exc:  # a consumer tool shows bad payloads, it does not die
                    shown = f"<undecodable: {exc}> {rec.payload!r}"
                print(f"{rec.gateway}/{rec.stream} {rec.epoch}:{rec.seq} {shown}", flush=True)
        finally:
            stopper.cancel()
