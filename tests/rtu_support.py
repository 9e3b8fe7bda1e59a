"""Serial test rig: pty pairs joined by a line-rate shim, and pymodbus's serial server as slave.

``PtyLine`` makes two pseudo-terminals, A (the gateway's end) and B (the slave's end), and
copies bytes between their master sides on the event loop. With ``baudrate`` set the shim
delivers each direction at the line rate (one character = 10 bit times), so timing behaves like
a real RS-485 line, and frames that arrive close together are concatenated in one read as on
real hardware. An optional tap pty receives a copy of both directions, as a passive listener on
the bus would (for the sniffer). ``corrupt`` lets a test flip bytes on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Callable

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

# pymodbus logs every frame at DEBUG once any test enabled it; at line rate that is megabytes.
logging.getLogger("pymodbus").setLevel(logging.WARNING)


def _pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class PtyLine:
    """Two (optionally three) ptys bridged on the running loop; see the module docstring."""

    def __init__(self, baudrate: int | None = None, tap: bool = False) -> None:
        self.ma, self.sa, self.a = _pty()
        self.mb, self.sb, self.b = _pty()
        self.tap: str | None = None
        self.mt = self.st = -1
        if tap:
            self.mt, self.st, self.tap = _pty()
        self.char_s = 10.0 / baudrate if baudrate else 0.0
        self.corrupt: Callable[[str, bytes], bytes] | None = None
        self.blocked = False  # drop everything (a cut cable)
        self._free = {self.ma: 0.0, self.mb: 0.0}
        self.bytes = {"a->b": 0, "b->a": 0}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.ma, self._pump, self.ma, self.mb, "a->b")
        loop.add_reader(self.mb, self._pump, self.mb, self.ma, "b->a")
        if self.mt >= 0:
            loop.add_reader(self.mt, self._drain_tap)

    def _drain_tap(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self.mt, 4096)  # the tap only listens; anything written to it is dropped

    def _pump(self, src: int, dst: int, direction: str) -> None:
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        if self.blocked or not data:
            return
        if self.corrupt is not None:
            data = self.corrupt(direction, data)
            if not data:
                return
        self.bytes[direction] += len(data)
        if not self.char_s:
            self._deliver(dst, data)
            return
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._free[src])
        done = start + len(data) * self.char_s
        self._free[src] = done
        loop.call_at(done, self._deliver, dst, data)

    def _deliver(self, dst: int, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(dst, data)
            if self.mt >= 0:
                os.write(self.mt, data)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self.ma, self.mb, self.mt):
            if fd >= 0:
                loop.remove_reader(fd)
        for fd in (self.ma, self.sa, self.mb, self.sb, self.mt, self.st):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def sim_slave(unit: int, holding: list[int], coils: int = 16) -> SimDevice:
    """A pymodbus slave with ``holding`` registers from address 0 and ``coils`` coils."""
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=[False] * coils, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=list(holding), datatype=DataType.REGISTERS)],
            [SimData(0, values=list(holding), datatype=DataType.REGISTERS)],
        ),
    )


class SerialSlaves:
    """pymodbus's serial server on ``port`` answering for the given slave devices."""

    def __init__(self, port: str, devices: list[SimDevice], baudrate: int = 115200) -> None:
        self.server = ModbusSerialServer(
            devices, port=port, baudrate=baudrate, ignore_missing_devices=True
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve_forever())
        await asyncio.sleep(0)

    async def stop(self) -> None:
        await self.server.shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` on the loop until true; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
