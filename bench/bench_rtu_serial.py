"""Serial request rate over a pty: our RTU line vs pymodbus's serial clients, same slave.

A pseudo-terminal pair stands in for the cable; a responder thread on its master side answers
every fc 3 request for 10 registers at once (a slave with zero turnaround, so the client is
what is measured). Each client reads 10 holding registers back to back for a fixed time:

* ``RtuLine.transact`` with t3.5 at 115200 baud (1.75 ms of silence kept before each request,
  as on a real line),
* ``RtuLine.transact`` with ``inter_frame: 0`` (a pty has no line; the client's own cost),
* pymodbus 3.16.1 ``AsyncModbusSerialClient`` and ``ModbusSerialClient`` at 115200 baud.

Prints requests/s and ratios. ``--quick`` runs each client for a short time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway._pure import modbus as pure  # noqa: E402
from gateway.config import DeviceConfig, RtuConfig  # noqa: E402
from gateway.drivers.modbus_rtu import make_line, rtu_frame  # noqa: E402

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class Responder(threading.Thread):
    """Answers every fc 3 request on the pty's master side with 10 registers."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        body = bytes((20,)) + bytes(range(20))
        self.answers = {u: rtu_frame(u, bytes((3,)) + body) for u in range(1, 248)}
        self.served = 0
        self._stop = threading.Event()

    def run(self) -> None:
        framer = pure.RtuFramer("request")
        while not self._stop.is_set():
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for unit, fc, _body in framer.feed(data):
                if fc == 3:
                    os.write(self.master, self.answers[unit])
                    self.served += 1

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self.slave, b"\0")  # wake the blocking read
        os.close(self.master)
        os.close(self.slave)


async def ours(port: str, seconds: float, inter_frame: float | None) -> float:
    cfg = DeviceConfig("bench", driver="modbus_rtu",
                       rtu=RtuConfig(port=port, baudrate=115200, inter_frame=inter_frame))  # fmt: skip
    line = make_line(cfg, time.time)
    await line.start()
    await asyncio.wait_for(line.opened.wait(), 5)
    frame = rtu_frame(1, bytes((3, 0, 0, 0, 10)))
    n, end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        await line.transact(frame, 1.0)
        n += 1
    rate = n / (time.perf_counter() - t0)
    await line.stop()
    return rate


async def pymodbus_async(port: str, seconds: float) -> float:
    from pymodbus.client import AsyncModbusSerialClient

    client = AsyncModbusSerialClient(port, baudrate=115200, timeout=1)
    await client.connect()
    n, end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        rr = await client.read_holding_registers(0, count=10, device_id=1)
        assert len(rr.registers) == 10
        n += 1
    rate = n / (time.perf_counter() - t0)
    client.close()
    return rate


def pymodbus_sync(port: str, seconds: float) -> float:
    from pymodbus.client import ModbusSerialClient

    client = ModbusSerialClient(port, baudrate=115200, timeout=1)
    client.connect()
    n, end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        rr = client.read_holding_registers(0, count=10, device_id=1)
        assert len(rr.registers) == 10
        n += 1
    rate = n / (time.perf_counter() - t0)
    client.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run")
    args = ap.parse_args()
    seconds = 0.5 if args.quick else 3.0
    rates: dict[str, float] = {}
    for name, run in (
        ("ours, t3.5 at 115200 (1.75 ms)", lambda p: asyncio.run(ours(p, seconds, None))),
        ("ours, inter_frame 0", lambda p: asyncio.run(ours(p, seconds, 0.0))),
        ("pymodbus AsyncModbusSerialClient", lambda p: asyncio.run(pymodbus_async(p, seconds))),
        ("pymodbus ModbusSerialClient", lambda p: pymodbus_sync(p, seconds)),
    ):
        responder = Responder()
        responder.start()
        try:
            rates[name] = run(responder.path)
        finally:
            responder.close()
    print(f"fc 3 x 10 registers over a pty, {seconds:g} s each (requests/s)")
    for name, r in rates.items():
        print(f"  {name:36s} {r:10,.0f}")
    base = rates["pymodbus AsyncModbusSerialClient"]
    for name in list(rates)[:2]:
        print(f"  ratio {name}: x{rates[name] / base:,.1f} vs pymodbus async, "
              f"x{rates[name] / rates['pymodbus ModbusSerialClient']:,.1f} vs pymodbus sync")  # fmt: skip


if __name__ == "__main__":
    main()
