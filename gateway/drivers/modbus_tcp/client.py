"""One Modbus TCP connection: asyncio protocol, transaction ids, timeouts, request priority.

By default one request is in flight per connection. Modbus TCP allows pipelining, but many
devices (and every Modbus TCP to RTU gateway) execute one request at a time and some drop or
mis-answer a second one, so pipelining buys nothing on them and turns one slow request into
several timeouts. With one in flight a timeout belongs to exactly one request, a late answer is
recognised by its stale transaction id, and throughput comes from polling many devices
concurrently in the one event loop. Writes queue ahead of polls, so a write waits at most for
the transaction already on the wire.

A transaction (:meth:`ModbusTcpConnection.transact`) is one request or, for a device configured
with ``max_in_flight > 1``, a window of pipelined requests sent in one write. Answers are matched
by transaction id (any order) and decoded in place by a :class:`ResponseMatcher`, the answers of
one socket read in one compiled call; the window shares one timer, and an answer arriving after
its transaction ended (timed out) is counted stale.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.impl import modbus


class TransactionTimeout(Exception):
    """The device did not answer within the request timeout."""


class ConnectionClosed(Exception):
    """The connection closed before the answer arrived (or was not open)."""


#: (function code, body after the function code, receive timestamp)
Response = tuple[int, bytes, float]

#: Slot status after a transaction (ResponseMatcher.feed): no answer (timed out), good,
#: exception answer, answer of the wrong function or length.
WAITING, OK, EXCEPTION, BAD = 0, 1, 2, 3


class Slots:
    """A ResponseMatcher (which keeps its slots' tids and status) and the raw answers of its
    ``raw_slots`` (function code + body), built once at configuration time and reused. Read
    them after :meth:`ModbusTcpConnection.transact` returns and before the next transaction
    through the same Slots."""

    __slots__ = ("matcher", "raw_slots", "raw")

    def __init__(self, matcher: Any, raw_slots: Sequence[int] = ()) -> None:
        self.matcher = matcher
        self.raw_slots = tuple(raw_slots)
        self.raw: list[bytes | None] = [None] * matcher.n_slots


class _Protocol(asyncio.Protocol):
    """Feeds received bytes to the owner, which matches them to the transaction in flight."""

    def __init__(self, owner: ModbusTcpConnection) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._owner._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._on_lost(exc)


def raw_slots() -> Slots:
    """One slot that takes any answer raw (writes; between transactions, where no tid waits)."""
    return Slots(modbus.ResponseMatcher([0], [0], [None], [0]), (0,))


_NO_VALUES = np.empty(0, np.float64)


class ModbusTcpConnection:
    """A client connection to one Modbus TCP device (unit id fixed per connection).

    Parameters
    ----------
    unit_id : the unit id every request carries; answers from another unit are dropped.
    timeout : seconds a request may wait for its answer.
    clock : wall clock for response timestamps (epoch seconds).
    """

    def __init__(
        self, unit_id: int, timeout: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.unit_id = unit_id
        self.timeout = timeout
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()  # a partial frame carried over to the next read
        self._tid = 0
        self._idle = raw_slots()  # its tid stays -1: every answer between transactions is stale
        self._single = raw_slots()  # request()
        self._slots = self._idle  # those of the transaction in flight
        self._out = _NO_VALUES
        self._done: asyncio.Future[float] | None = None
        self._busy = False
        self._high: deque[asyncio.Future[None]] = deque()
        self._low: deque[asyncio.Future[None]] = deque()
        self.closed: asyncio.Future[Exception | None] = self._loop.create_future()
        # Counters read by the device's stats().
        self.requests = 0
        self.responses = 0
        self.timeouts = 0
        self.stale = 0
        self.malformed = 0
        self.last_rtt = float("nan")

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self.closed.done()

    @property
    def bad_frames(self) -> int:
        """Malformed frames plus answers nobody waits for (stale/unknown tid, wrong unit)."""
        return self.malformed + self.stale

    async def open(self, host: str, port: int, connect_timeout: float) -> None:
        """Connect; raises OSError or TimeoutError when the device cannot be reached."""
        transport, _ = await asyncio.wait_for(
            self._loop.create_connection(lambda: _Protocol(self), host, port),
            connect_timeout,
        )
        self._transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        """Close the socket; the pending request and queued requests fail with ConnectionClosed."""
        if self._transport is not None:
            self._transport.close()
        self._on_lost(None)

    async def request(self, tail: bytes, high_priority: bool = False) -> Response:
        """Send one request (its ADU without the transaction id) and await the raw answer.

        Raises
        ------
        TransactionTimeout : no answer within ``timeout``.
        ConnectionClosed : the connection is or became closed.
        """
        slots = self._single
        ts = await self.transact((tail,), slots, _NO_VALUES, high_priority)
        raw = slots.raw[0]
        if raw is None:
            raise TransactionTimeout("no answer")
        return raw[0], raw[1:], ts

    async def transact(
        self,
        tails: Sequence[bytes],
        slots: Slots,
        out: npt.NDArray[np.float64],
        high_priority: bool = False,
    ) -> float:
        """Send ``tails`` (request ADUs without transaction id, one per slot) in one write,
        pipelined, and wait until every one is answered or ``timeout`` passed; return the
        receive time. Register answers are decoded into ``out``; ``slots.matcher.statuses()`` and
        ``slots.raw`` tell the rest. Unanswered slots stay WAITING and count as timeouts.

        Raises
        ------
        ConnectionClosed : the connection is or became closed.
        """
        if self._busy or self._high or self._low:
            waiter: asyncio.Future[None] = self._loop.create_future()
            (self._high if high_priority else self._low).append(waiter)
            try:
                await waiter  # _release hands the slot over; _busy stays True
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._release()  # the slot was handed to us as we were cancelled
                else:
                    self._discard(waiter)
                raise
        else:
            self._busy = True
        try:
            return await self._transact(tails, slots, out)
        finally:
            self._release()

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        for q in (self._high, self._low):
            try:
                q.remove(waiter)
            except ValueError:
                pass

    def _release(self) -> None:
        while self._high or self._low:
            waiter = (self._high or self._low).popleft()
            if not waiter.done():
                waiter.set_result(None)  # ownership of the slot passes to the waiter
                return
        self._busy = False

    async def _transact(
        self, tails: Sequence[bytes], slots: Slots, out: npt.NDArray[np.float64]
    ) -> float:
        transport = self._transport
        if transport is None or self.closed.done():
            raise ConnectionClosed("not connected")
        n = len(tails)
        m = slots.matcher
        first = (self._tid + 1) & 0xFFFF
        self._tid = m.arm(first, n)
        for k in slots.raw_slots:
            slots.raw[k] = None
        if n == 1:
            frame = first.to_bytes(2, "big") + tails[0]
        else:
            frame = b"".join(
                ((first + k) & 0xFFFF).to_bytes(2, "big") + tail for k, tail in enumerate(tails)
            )
        done: asyncio.Future[float] = self._loop.create_future()
        self._slots, self._out, self._done = slots, out, done
        timer = self._loop.call_later(self.timeout, _expire, done)
        self.requests += n
        sent = time.perf_counter()
        transport.write(frame)
        try:
            ts = await done
        except TransactionTimeout:
            ts = self._clock()
            self.timeouts += m.waiting
        finally:
            timer.cancel()
            self._slots, self._out, self._done = self._idle, _NO_VALUES, None
        if m.waiting < n:
            self.last_rtt = time.perf_counter() - sent
        return ts

    def _on_data(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            stream: bytes | bytearray = buf
        else:
            stream = data
        slots = self._slots
        m = slots.matcher
        got = m.feed(stream, self.unit_id, self._out)
        self.stale += m.last_stale
        self.malformed += m.last_bad
        if got:
            self.responses += got
            raw = slots.raw
            for k in slots.raw_slots:
                if raw[k] is None:
                    start, end = m.span(k)
                    if start >= 0:
                        raw[k] = bytes(stream[start:end])
            done = self._done
            if m.waiting <= 0 and done is not None and not done.done():
                done.set_result(self._clock())
        used = m.last_consumed
        if stream is buf:
            del buf[:used]
        elif used < len(data):
            buf += data[used:]

    def _on_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(exc)
        fut = self._done
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionClosed(str(exc) if exc else "connection closed"))
        while self._high or self._low:
            waiter = (self._high or self._low).popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionClosed("connection closed"))


def _expire(fut: asyncio.Future[float]) -> None:
    if not fut.done():
        fut.set_exception(TransactionTimeout("no answer"))
