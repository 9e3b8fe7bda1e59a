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

#: Slot status after a transaction (ResponseMatcher.feed): no answer (timed out), decoded,
#: exception answer, answer of the wrong function or length.
WAITING, OK, EXCEPTION, BAD = 0, 1, 2, 3


class Transaction:
    """The outcome of :meth:`ModbusTcpConnection.transact`: per slot status, the raw answers of
    the slots without a decoder (``function code + body``), the receive time of the last one."""

    __slots__ = ("status", "raw", "ts")

    def __init__(self, status: npt.NDArray[np.int8], raw: list[bytes | None], ts: float) -> None:
        self.status = status
        self.raw = raw
        self.ts = ts


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


def raw_matcher() -> Any:
    """A one-slot matcher that takes any answer raw (writes; the idle state)."""
    return modbus.ResponseMatcher([0], [0], [None], [0])


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
        self._idle = raw_matcher()
        self._idle_tids = np.full(1, -1, np.intc)
        # The transaction in flight: its matcher and arrays (the idle ones between transactions).
        self._matcher: Any = self._idle
        self._tids = self._idle_tids
        self._status = np.zeros(1, np.int8)
        self._spans = np.zeros((1, 2), np.intp)
        self._out = _NO_VALUES
        self._raw_slots: Sequence[int] = ()
        self._raw: list[bytes | None] = []
        self._waiting = 0
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
        t = await self.transact((tail,), self._idle, (0,), _NO_VALUES, high_priority)
        raw = t.raw[0]
        if raw is None:
            raise TransactionTimeout("no answer")
        return raw[0], raw[1:], t.ts

    async def transact(
        self,
        tails: Sequence[bytes],
        matcher: Any,
        raw_slots: Sequence[int],
        out: npt.NDArray[np.float64],
        high_priority: bool = False,
    ) -> Transaction:
        """Send ``tails`` (request ADUs without transaction id) in one write, pipelined, and wait
        until every one is answered or ``timeout`` passed. ``matcher`` has one slot per tail and
        decodes register answers into ``out``; ``raw_slots`` are the slots whose answers are
        returned as bytes. Unanswered slots stay WAITING and count as timeouts.

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
            return await self._transact(tails, matcher, raw_slots, out)
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
        self,
        tails: Sequence[bytes],
        matcher: Any,
        raw_slots: Sequence[int],
        out: npt.NDArray[np.float64],
    ) -> Transaction:
        transport = self._transport
        if transport is None or self.closed.done():
            raise ConnectionClosed("not connected")
        n = len(tails)
        tids = np.empty(n, np.intc)
        tid = self._tid
        parts = []
        for k, tail in enumerate(tails):
            tid = (tid + 1) & 0xFFFF
            tids[k] = tid
            parts.append(tid.to_bytes(2, "big") + tail)
        self._tid = tid
        status = np.zeros(n, np.int8)
        raw: list[bytes | None] = [None] * n
        done: asyncio.Future[float] = self._loop.create_future()
        self._matcher, self._tids, self._status, self._out = matcher, tids, status, out
        self._spans = np.empty((n, 2), np.intp)
        self._raw_slots, self._raw, self._waiting, self._done = raw_slots, raw, n, done
        timer = self._loop.call_later(self.timeout, _expire, done)
        self.requests += n
        sent = time.perf_counter()
        transport.write(parts[0] if n == 1 else b"".join(parts))
        try:
            ts = await done
        except TransactionTimeout:
            ts = self._clock()
            self.timeouts += self._waiting
        finally:
            timer.cancel()
            self._matcher, self._tids, self._out, self._done = (
                self._idle,
                self._idle_tids,
                _NO_VALUES,
                None,
            )
            self._status = np.zeros(1, np.int8)
            self._spans = np.zeros((1, 2), np.intp)
        if self._waiting < n:
            self.last_rtt = time.perf_counter() - sent
        return Transaction(status, raw, ts)

    def _on_data(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            stream: bytes | bytearray = buf
        else:
            stream = data
        m = self._matcher
        got = m.feed(stream, self.unit_id, self._tids, self._status, self._spans, self._out)
        self.stale += m.last_stale
        self.malformed += m.last_bad
        if got:
            self.responses += got
            status, spans, raw = self._status, self._spans, self._raw
            for k in self._raw_slots:
                if status[k] and raw[k] is None:
                    raw[k] = bytes(stream[spans[k, 0] : spans[k, 1]])
            self._waiting -= got
            done = self._done
            if self._waiting <= 0 and done is not None and not done.done():
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
