"""The image test's Modbus RTU slave on the host end of the guest's emulated UART.

qemu gives the guest a PCI 16550 UART (``pci-serial``: the guest's 8250 driver, a ``ttyS`` port
as on a board) whose other end is a host pty; this process serves a simulated motor on that pty
with pymodbus's serial server. The motor has a bearing fault from the start (``MotorModel``: a
3.1 Hz swell the ``bearing_ae`` model detects while the vibration stays below any threshold),
so the model running in the guest on this RTU device's points raises its alarm.

    python images/debian-rpi/rtu_slave.py /dev/pts/N
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pymodbus.constants import ExcCodes  # noqa: E402
from pymodbus.server import ModbusSerialServer  # noqa: E402
from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: E402

from gateway.drivers.sim import MotorModel, SimPoint  # noqa: E402

UNIT = 1
BAUDRATE = 115200
#: The holding registers, as the guest's site config reads them (boot_test.rtu_device()).
POINTS = (
    SimPoint("current", 0, type="uint16", scale=0.01, unit="A"),
    SimPoint("vibration", 1, type="float32", word_order="little", unit="mm/s"),
    SimPoint("temp", 3, type="int16", scale=0.1, unit="degC"),
)
WORDS = sum(p.words for p in POINTS)


class Motor:
    """The motor's register image, computed from the model at each request."""

    def __init__(self) -> None:
        self.model = MotorModel(bearing_fault_at=0.0)
        self.reads = 0

    async def action(
        self,
        function_code: int,
        _start_address: int,
        _address: int,
        _count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus's per-request hook (see gateway/drivers/sim/server.py): refresh the image."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # read-only device
        if function_code != 3:
            return ExcCodes.ILLEGAL_FUNCTION
        self.model.update(time.time())
        values = self.model.values()
        image: list[int] = []
        for p in POINTS:
            image += p.encode(values[p.name])
        registers[: len(image)] = image
        self.reads += 1
        if self.reads == 1:
            logging.info("first request answered")
        return None


async def serve(port: str) -> None:
    motor = Motor()
    device = SimDevice(
        UNIT,
        simdata=(
            [SimData(0xFFF0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0xFFF0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, count=WORDS, datatype=DataType.REGISTERS, readonly=True)],
            [SimData(0, datatype=DataType.INVALID)],
        ),
        action=motor.action,
    )
    server = ModbusSerialServer(device, port=port, baudrate=BAUDRATE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(server.serve_forever())
    logging.info("serving unit %d on %s", UNIT, port)
    await stop.wait()
    await server.shutdown()
    task.cancel()
    logging.info("stopped after %d requests", motor.reads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", help="the host end of the guest's UART (qemu's pty)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rtu-slave: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
