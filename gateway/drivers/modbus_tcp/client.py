"""One Modbus TCP connection: asyncio protocol, transaction ids, timeouts, request priority.

Requests are serialised, one in flight per connection. Modbus TCP allows pipelining, but many
devices (and every Modbus TCP to RTU gateway) execute one request at a time and some drop or
mis-answer a second one, so pipelining buys nothing on them and turns one slow request into
several timeouts. With one in flight a timeout belongs to exactly one request, a late answer is
recognised by its stale transaction id, and throughput comes from polling many devices
concurrently in the one event loop. Writes queue ahead of polls, so a write waits at most for
the request already on the wire.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable

from gateway.impl import modbus


class TransactionTimeout(Exception):
    """The device did not answer within the request timeout."""


class ConnectionClosed(Exception):
    """The connection closed before the answer arrived (or was not open)."""


#: (function code, body after the function code, receive timestamp)
Response = tuple[int, bytes, float]


class _Protocol(asyncio.Protocol):
    """Feeds received bytes to the MBAP framer and resolves the matching transaction."""

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
        self._framer = modbus.MbapFramer()
        self._tid = 0
        self._pending_tid = -1
        self._pending: asyncio.Future[Response] | None = None
        self._busy = False
        self._high: deque[asyncio.Future[None]] = deque()
        self._low: deque[asyncio.Future[None]] = deque()
        self.closed: asyncio.Future[Exception | None] = self._loop.create_future()
        # Counters read by the device's stats().
        self.requests = 0
        self.responses = 0
        self.timeouts = 0
        self.stale = 0
        self.last_rtt = float("nan")

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self.closed.done()

    @property
    def bad_frames(self) -> int:
        """Malformed frames plus answers nobody waits for (stale/unknown tid, wrong unit)."""
        return int(self._framer.bad_frames) + self.stale

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
        """Send one request (its ADU without the transaction id) and await the answer.

        Raises
        ------
        TransactionTimeout : no answer within ``timeout``.
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
            return await self._transact(tail)
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

    async def _transact(self, tail: bytes) -> Response:
        transport = self._transport
        if transport is None or self.closed.done():
            raise ConnectionClosed("not connected")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        fut: asyncio.Future[Response] = self._loop.create_future()
        self._pending, self._pending_tid = fut, tid
        timer = self._loop.call_later(self.timeout, _expire, fut)
        self.requests += 1
        sent = time.perf_counter()
        transport.write(tid.to_bytes(2, "big") + tail)
        try:
            result = await fut
        except TransactionTimeout:
            self.timeouts += 1
            raise
        finally:
            timer.cancel()
            self._pending, self._pending_tid = None, -1
        self.last_rtt = time.perf_counter() - sent
        return result

    def _on_data(self, data: bytes) -> None:
        frames = self._framer.feed(data)
        for tid, unit, function, body in frames:
            fut = self._pending
            if tid != self._pending_tid or unit != self.unit_id or fut is None or fut.done():
                self.stale += 1  # late answer to a timed-out request, or a confused device
                continue
            self.responses += 1
            fut.set_result((function, body, self._clock()))

    def _on_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(exc)
        fut = self._pending
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionClosed(str(exc) if exc else "connection closed"))
        while self._high or self._low:
            waiter = (self._high or self._low).popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionClosed("connection closed"))


def _expire(fut: asyncio.Future[Response]) -> None:
    if not fut.done():
        fut.set_exception(TransactionTimeout("no answer"))
