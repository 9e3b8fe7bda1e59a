"""One Modbus RTU line: a serial port (or an RTU-over-TCP socket) shared by every slave on it.

The line owns the byte stream and the one rule RTU imposes on it: one request in flight, and
at least t3.5 of silence between frames. Reception is event driven (``loop.add_reader`` on the
serial file descriptor, a Protocol for TCP), so a response is handed to its waiter in the same
loop iteration its last byte arrives; nothing polls and nothing sleeps in steps.

State::

    closed --open ok--> open --I/O error / EOF--> closed (waiters fail, supervisor reopens)
    closed --open fails--> closed (users told offline, retried with backoff)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.config import DeviceConfig, RtuConfig
from gateway.core.guard import Faults, cancel_and_wait, ended_task
from gateway.impl import modbus

_log = logging.getLogger(__name__)

PARITY_BITS = {"none": 0, "even": 1, "odd": 1}


class LineClosed(Exception):
    """The line is not open (or closed while a request waited)."""


class TransactionTimeout(Exception):
    """No matching response within the timeout."""


def char_time(baudrate: int, bytesize: int = 8, parity: str = "none", stopbits: float = 1) -> float:
    """Seconds one character occupies on the wire: start bit, data, parity, stop bits."""
    return (1 + bytesize + PARITY_BITS[parity] + stopbits) / baudrate


def inter_frame_gap(rtu: RtuConfig) -> float:
    """The silence kept between frames: t3.5, fixed at 1.75 ms above 19200 baud (spec 2.5.1.1)."""
    if rtu.inter_frame is not None:
        return rtu.inter_frame
    if rtu.baudrate > 19200:
        return 0.00175
    return 3.5 * char_time(rtu.baudrate, rtu.bytesize, rtu.parity, rtu.stopbits)


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """``unit + pdu + CRC`` (low byte first)."""
    head = bytes((unit,)) + pdu
    return head + modbus.crc16(head).to_bytes(2, "little")


class LineUser(Protocol):
    """What a line tells the devices on it."""

    def line_down(self, reason: str) -> None: ...


class RtuLine:
    """Base of the serial and TCP lines: framing, the in-flight request, gap timing, reopen.

    Parameters
    ----------
    name : shown in logs and errors (the port or host:port).
    rtu : line settings (the first device's; the config loader checked all devices agree).
    reconnect : (min, max) reopen backoff in seconds.
    clock : wall clock for response timestamps.
    role : framer role; ``"sniff"`` for passive listening.
    """

    def __init__(
        self,
        name: str,
        rtu: RtuConfig,
        reconnect: tuple[float, float] = (0.5, 30.0),
        clock: Callable[[], float] = time.time,
        role: str = "response",
    ) -> None:
        self.name = name
        self.rtu = rtu
        self.gap = inter_frame_gap(rtu)
        self.char_s = char_time(rtu.baudrate, rtu.bytesize, rtu.parity, rtu.stopbits)
        self._reconnect = reconnect
        self._clock = clock
        self.framer = modbus.RtuFramer(role)
        self.users: list[LineUser] = []
        #: In sniff mode: receives ``[(direction, unit, function, body)], ts`` of every frame.
        self.sniffer: Callable[[list[Any], float], None] | None = None
        self.opened = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pending: tuple[int, int, asyncio.Future[tuple[int, bytes, float]]] | None = None
        self._absorbing: asyncio.Task[None] | None = None
        self._quiet_at = 0.0  # loop time from which the line has been silent for t3.5
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._starts = 0
        self._rng = random.Random()
        self.requests = self.responses = self.timeouts = self.unexpected = 0
        self.opens = self.open_failures = 0
        self.bytes_in = 0
        self.faults = Faults(_log)

    # -- lifecycle (reference counted: every device on the line starts and stops it) ---------
    async def start(self) -> None:
        self._starts += 1
        if self._task is None or self._task.done():  # a line task that died is started again
            self._task = asyncio.create_task(self._supervise(), name=f"rtu-line:{self.name}")

    async def stop(self) -> None:
        self._starts -= 1
        if self._starts > 0 or self._task is None:
            return
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _supervise(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._lost = loop.create_future()
                try:
                    await self._open()
                except Exception as exc:  # OSError, ValueError (bad settings); never fatal
                    self.open_failures += 1
                    self._down(f"cannot open {self.name}: {exc}")
                else:
                    self.opens += 1
                    attempt = 0
                    self.framer.reset()
                    self._quiet_at = loop.time() + self.gap
                    self.opened.set()
                    _log.info("rtu line %s open", self.name)
                    try:
                        reason = await self._lost
                    finally:
                        self.opened.clear()
                        self._close()
                    self._down(f"line {self.name} lost: {reason}")
                lo, hi = self._reconnect
                step = min(hi, lo * 2.0**attempt)
                attempt = min(attempt + 1, 62)
                await asyncio.sleep(step * (0.5 + 0.5 * self._rng.random()))
        finally:
            self.opened.clear()
            self._close()
            self._fail_pending(LineClosed(f"line {self.name} stopped"))

    def _down(self, reason: str) -> None:
        self._fail_pending(LineClosed(reason))
        for user in self.users:
            try:
                user.line_down(reason)
            except Exception:  # one device's bug must not keep the line from reopening
                _log.exception("line %s: telling a device it is down failed", self.name)

    def task_failure(self) -> str | None:
        """Why the line's task ended while devices use it (None while it runs)."""
        return ended_task(self._task)

    def _lose(self, reason: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    def _fail_pending(self, exc: Exception) -> None:
        if self._pending is not None and not self._pending[2].done():
            self._pending[2].set_exception(exc)

    # -- transport hooks ----------------------------------------------------------------------
    async def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    async def _send(self, frame: bytes) -> None:
        raise NotImplementedError

    def _on_bytes(self, data: bytes) -> None:
        """Bytes from the wire: frame them and wake the waiter of a matching response."""
        self.bytes_in += len(data)
        loop = asyncio.get_running_loop()
        self._quiet_at = loop.time() + self.gap
        frames = self.framer.feed(data)
        if not frames:
            return
        ts = self._clock()
        if self.sniffer is not None:
            # Called from the transport: an exception here would close the connection.
            try:
                self.sniffer(frames, ts)
            except Exception as exc:
                self.faults.failed(f"rtu line {self.name}: sniffed frames", exc)
        else:
            self._frames(frames, ts)

    def _frames(self, frames: list[Any], ts: float) -> None:
        pending = self._pending
        for unit, function, body in frames:
            if (
                pending is not None
                and not pending[2].done()
                and unit == pending[0]
                and function & 0x7F == pending[1]
            ):
                pending[2].set_result((function, body, ts))
                self.responses += 1
            else:
                self.unexpected += 1

    # -- requests -----------------------------------------------------------------------------
    async def transact(self, frame: bytes, timeout: float) -> tuple[int, bytes, float]:
        """Send one request frame (with CRC); return ``(function, body, ts)`` of its response.

        Raises
        ------
        TransactionTimeout : no matching response within ``timeout`` seconds.
        LineClosed : the line is not open or closed meanwhile.
        """
        async with self._lock:
            if self._absorbing is not None:
                await asyncio.wait({self._absorbing})
            if not self.opened.is_set():
                raise LineClosed(f"line {self.name} is not open")
            loop = asyncio.get_running_loop()
            wait = self._quiet_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            fut: asyncio.Future[tuple[int, bytes, float]] = loop.create_future()
            self._pending = (frame[0], frame[1], fut)
            self.requests += 1
            limit = timeout + len(frame) * self.char_s
            try:
                await self._send(frame)
                # The response cannot start before the request left the wire.
                self._quiet_at = loop.time() + len(frame) * self.char_s + self.gap
                return await asyncio.wait_for(asyncio.shield(fut), limit)
            except TimeoutError:
                self.timeouts += 1
                self.framer.reset()  # a partial or garbage frame must not stall the next one
                raise TransactionTimeout(
                    f"no answer from unit {frame[0]} within {timeout}s"
                ) from None
            except asyncio.CancelledError:
                # The request is on the wire and its answer will come: keep the line busy
                # until it does (or times out), so it is not taken for the next answer.
                if not fut.done():
                    self._absorbing = loop.create_task(self._absorb(fut, limit))
                raise
            finally:
                if self._absorbing is None:
                    self._pending = None

    async def _absorb(self, fut: asyncio.Future[Any], limit: float) -> None:
        try:
            await asyncio.wait({fut}, timeout=limit)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: a line closing meanwhile is not an error here
            else:
                self.framer.reset()
        finally:
            self._pending = None
            self._absorbing = None

    def stats(self) -> dict[str, int]:
        return {
            "line_requests": self.requests,
            "line_responses": self.responses,
            "line_timeouts": self.timeouts,
            "line_unexpected_frames": self.unexpected,
            "crc_errors": int(self.framer.crc_errors),
            "discarded_bytes": int(self.framer.discarded_bytes),
            "line_opens": self.opens,
            "line_open_failures": self.open_failures,
        }


class SerialLine(RtuLine):
    """RTU over a serial port (pyserial opens and configures it; the loop watches its fd)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._serial: Any = None
        self._fd = -1

    async def _open(self) -> None:
        import serial  # pyserial; imported here so Modbus TCP-only gateways do not need it
        import serial.rs485

        rtu = self.rtu
        ser = serial.Serial()
        ser.port = rtu.port
        ser.baudrate = rtu.baudrate
        ser.bytesize = rtu.bytesize
        ser.parity = {"none": serial.PARITY_NONE, "even": serial.PARITY_EVEN,
                      "odd": serial.PARITY_ODD}[rtu.parity]  # fmt: skip
        ser.stopbits = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE,
                        2: serial.STOPBITS_TWO}[rtu.stopbits]  # fmt: skip
        ser.timeout = 0
        ser.exclusive = True
        if rtu.rs485:
            ser.rs485_mode = serial.rs485.RS485Settings(
                rts_level_for_tx=rtu.rts_level_for_tx,
                rts_level_for_rx=not rtu.rts_level_for_tx,
                delay_before_tx=rtu.rts_delay_before_tx or None,
                delay_before_rx=rtu.rts_delay_after_tx or None,
            )
        try:
            ser.open()
        except serial.SerialException as exc:
            raise OSError(str(exc)) from None
        self._serial = ser
        self._fd = ser.fileno()
        os.set_blocking(self._fd, False)
        ser.reset_input_buffer()
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(str(exc))
            return
        if not data:
            self._lose("end of file")
            return
        self._on_bytes(data)

    def _close(self) -> None:
        if self._serial is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        with contextlib.suppress(Exception):
            self._serial.close()
        self._serial = None
        self._fd = -1

    async def _send(self, frame: bytes) -> None:
        view = memoryview(frame)
        loop = asyncio.get_running_loop()
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_writer(self._fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(self._fd)
                continue
            except OSError as exc:
                self._lose(str(exc))
                raise LineClosed(f"write to {self.name}: {exc}") from None
            view = view[n:]


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, line: TcpRtuLine) -> None:
        self.line = line

    def data_received(self, data: bytes) -> None:
        self.line._on_bytes(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.line._lose(str(exc) if exc else "closed by peer")


class TcpRtuLine(RtuLine):
    """RTU frames over a TCP socket (serial device servers in transparent mode)."""

    def __init__(self, host: str, port: int, timeout: float, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host, self.port, self.connect_timeout = host, port, timeout
        self._transport: asyncio.Transport | None = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _TcpProtocol(self), self.host, self.port),
                self.connect_timeout,
            )
        except TimeoutError:
            raise OSError(f"connect timed out after {self.connect_timeout}s") from None
        self._transport = transport

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _send(self, frame: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise LineClosed(f"line {self.name} is closed")
        self._transport.write(frame)


def line_key(config: DeviceConfig) -> str:
    """Devices with the same key share one line."""
    rtu = config.rtu
    assert rtu is not None
    where = rtu.port if rtu.transport == "serial" else f"{config.host}:{config.port}"
    return f"{'sniff' if rtu.sniff else 'rtu'}:{where}"


def make_line(config: DeviceConfig, clock: Callable[[], float]) -> RtuLine:
    """The line a device's config describes (serial or TCP, master or sniffer)."""
    rtu = config.rtu
    assert rtu is not None
    reconnect = (config.reconnect_min, config.reconnect_max)
    role = "sniff" if rtu.sniff else "response"
    if rtu.transport == "tcp":
        name = f"{config.host}:{config.port}"
        return TcpRtuLine(config.host, config.port, max(2 * config.timeout, 1.0), name, rtu,
                          reconnect, clock, role)  # fmt: skip
    return SerialLine(rtu.port, rtu, reconnect, clock, role)
