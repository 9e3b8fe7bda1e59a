"""pymodbus servers for simulated devices, and the Factory that runs them.

Each device is a pymodbus 3.16 ``ModbusTcpServer`` built from ``SimDevice``/``SimData`` (the
non-deprecated datastore) with separate coil, discrete, holding and input tables. pymodbus
offers no public call to change register values from outside; its documented hook is the
device ``action``, an async callback run on every request with the addressed block's live
register list, which it may modify in place. The factory uses exactly that: models advance on
the factory's tick, and the action copies the current register image (encoded lazily, at most
once per tick) into the block before pymodbus builds the answer. Client writes pass through the
same action, which hands the decoded engineering value to the model, so a written coil or
setpoint is at once visible in the model's state and in later reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.drivers.sim.factory import TABLES, SimDeviceSpec, SimPoint

_WRITE_TABLE = {5: "coil", 15: "coil", 6: "holding", 16: "holding"}
# pymodbus also reads back through the action after a write, with the write's function code.
_READ_TABLE = {1: "coil", 2: "discrete", 3: "holding", 4: "input", **_WRITE_TABLE}
#: pymodbus needs at least one block per table; unused bit tables live out of the way here.
_UNUSED_BITS_ADDRESS = 0xFFF0


class _SimDeviceState:
    """One device: its model, lazily encoded register images, server and fault switches."""

    def __init__(self, spec: SimDeviceSpec) -> None:
        self.spec = spec
        self.model = spec.model()
        self.port = spec.port
        self.server: ModbusTcpServer | None = None
        self.responsive = asyncio.Event()
        self.responsive.set()
        self.reads = 0
        self.writes = 0
        self._version = 0
        self._values_version = -1
        self._values: dict[str, float] = {}
        self._images: dict[str, tuple[int, list[int]]] = {}
        self._images_version = -1
        self._layout: dict[str, tuple[int, int, list[SimPoint]]] = {}
        for table in TABLES:
            pts = spec.table_points(table)
            if not pts:
                continue
            start = pts[0].address
            end = start
            for p in pts:
                if p.address < end:
                    raise ValueError(f"{spec.name}.{p.name}: overlaps another point")
                end = p.address + p.words
            if table in ("coil", "discrete"):
                start -= start % 16  # pymodbus packs bit blocks from a multiple of 16
                end += -(end - start) % 16
            self._layout[table] = (start, end, pts)

    def update(self, t: float) -> None:
        self.model.update(t)
        self._version += 1

    def values(self) -> dict[str, float]:
        """Current engineering values (one noise draw per tick, shared by reads and snapshots)."""
        if self._values_version != self._version:
            self._values = self.model.values()
            self._values_version = self._version
        return self._values

    def write(self, name: str, value: float) -> None:
        self.model.write(name, value)
        self._version += 1

    def simdata(self) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        blocks: list[list[SimData]] = []
        for table in TABLES:
            bits = table in ("coil", "discrete")
            if table not in self._layout:
                if bits:
                    blocks.append(
                        [SimData(_UNUSED_BITS_ADDRESS, values=[False] * 16, datatype=DataType.BITS)]
                    )
                else:
                    blocks.append([SimData(0, datatype=DataType.INVALID)])
                continue
            start, end, pts = self._layout[table]
            if bits:
                blocks.append(
                    [SimData(start, values=[False] * (end - start), datatype=DataType.BITS)]
                )
                continue
            regs: list[SimData] = []
            addr = start
            for p in pts:
                if p.address > addr:  # gaps read as zero, so coalesced reads across them work
                    regs.append(
                        SimData(
                            addr, count=p.address - addr, datatype=DataType.REGISTERS, readonly=True
                        )
                    )
                regs.append(
                    SimData(
                        p.address,
                        count=p.words,
                        datatype=DataType.REGISTERS,
                        readonly=not p.writable,
                    )
                )
                addr = p.address + p.words
            blocks.append(regs)
        return blocks[0], blocks[1], blocks[2], blocks[3]

    def _image(self, table: str) -> list[int]:
        if self._images_version != self._version:
            self._images.clear()
            self._images_version = self._version
        cached = self._images.get(table)
        if cached is not None:
            return cached[1]
        start, end, pts = self._layout[table]
        values = self.values()
        if table in ("coil", "discrete"):
            words = [0] * ((end - start) // 16)
            for p in pts:
                if values.get(p.name, 0.0):
                    bit = p.address - start
                    words[bit // 16] |= 1 << (bit % 16)
        else:
            words = [0] * (end - start)
            for p in pts:
                i = p.address - start
                words[i : i + p.words] = p.encode(values.get(p.name, 0.0))
        self._images[table] = (start, words)
        return words

    async def action(
        self,
        function_code: int,
        _start_address: int,
        address: int,
        _count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus hook, run before every request is answered (see the module docstring)."""
        if not self.responsive.is_set():
            await self.responsive.wait()  # fault injection: the device hangs
        if set_values is None:
            table = _READ_TABLE.get(function_code)
            if table is None or table not in self._layout:
                return ExcCodes.ILLEGAL_ADDRESS
            self.reads += 1
            image = self._image(table)
            registers[: len(image)] = image
            return None
        table = _WRITE_TABLE.get(function_code, "")
        if table not in self._layout:
            return ExcCodes.ILLEGAL_FUNCTION
        return self._apply_write(table, address, list(set_values))

    def _apply_write(
        self, table: str, address: int, vals: list[int] | list[bool]
    ) -> ExcCodes | None:
        end = address + len(vals)
        hits = [
            p for p in self._layout[table][2] if p.address < end and address < p.address + p.words
        ]
        for p in hits:
            if not p.writable or p.address < address or p.address + p.words > end:
                return ExcCodes.ILLEGAL_ADDRESS  # read-only point, or a partial multi-word write
        for p in hits:
            i = p.address - address
            if table == "coil":
                self.write(p.name, 1.0 if vals[i] else 0.0)
            else:
                self.write(p.name, p.decode([int(v) for v in vals[i : i + p.words]]))
        self.writes += 1
        return None


class Factory:
    """A set of simulated devices, one pymodbus server each, on one event loop.

    Parameters
    ----------
    specs : the devices.
    clock : time source for the signal models (seconds); inject one to drive them in tests.
    """

    def __init__(self, specs: list[SimDeviceSpec], clock: Callable[[], float] = time.time) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("device names must be unique")
        self.clock = clock
        self._devices = {s.name: _SimDeviceState(s) for s in specs}

    @property
    def ports(self) -> dict[str, int]:
        """Device name -> TCP port it listens on (the bound port once a port-0 server started)."""
        return {name: d.port for name, d in self._devices.items()}

    def model(self, device: str) -> object:
        """The device's signal model (e.g. :class:`~gateway.drivers.sim.signals.PressModel`)."""
        return self._devices[device].model

    def values(self, device: str) -> dict[str, float]:
        """Current engineering values of a device, coil states included (1.0 / 0.0)."""
        return dict(self._devices[device].values())

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {name: dict(d.values()) for name, d in self._devices.items()}

    def counters(self, device: str) -> dict[str, int]:
        d = self._devices[device]
        return {"reads": d.reads, "writes": d.writes}

    def set_value(self, device: str, point: str, value: float) -> None:
        """Operate a machine locally, as if from its own panel (a writable model value)."""
        self._devices[device].write(point, value)

    def tick(self, t: float | None = None) -> None:
        """Advance every model to time ``t`` (default: the factory clock)."""
        now = self.clock() if t is None else t
        for d in self._devices.values():
            d.update(now)

    def stall(self, device: str, stalled: bool = True) -> None:
        """Make a device stop answering requests (connections stay open) or resume."""
        ev = self._devices[device].responsive
        if stalled:
            ev.clear()
        else:
            ev.set()

    async def start(self) -> None:
        """Start every device's server."""
        for name in self._devices:
            await self.start_device(name)

    async def start_device(self, device: str) -> None:
        """Start (or restart, on the same port) one device's server."""
        d = self._devices[device]
        if d.server is not None:
            return
        sim = SimDevice(d.spec.unit_id, simdata=d.simdata(), action=d.action)
        server = ModbusTcpServer(sim, address=(d.spec.host, d.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"{device}: cannot listen on {d.spec.host}:{d.port}") from exc
        sockets = getattr(server.transport, "sockets", None)
        if sockets:
            d.port = sockets[0].getsockname()[1]
        d.server = server

    async def stop_device(self, device: str) -> None:
        """Stop one device's server, closing its client connections."""
        d = self._devices[device]
        server, d.server = d.server, None
        if server is not None:
            await server.shutdown()

    async def close(self) -> None:
        """Stop every server; hung requests are released so no handler is left pending."""
        for name, d in self._devices.items():
            d.responsive.set()
            await self.stop_device(name)
        await asyncio.sleep(0)

    async def __aenter__(self) -> Factory:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def run_factory(
    specs: list[SimDeviceSpec],
    stop: asyncio.Event,
    clock: Callable[[], float] = time.time,
    tick: float = 0.05,
    on_tick: Callable[[dict[str, dict[str, float]]], None] | None = None,
) -> None:
    """Serve ``specs`` until ``stop`` is set, advancing the models every ``tick`` seconds.

    Ticks follow a monotonic schedule; a late tick is run once, missed ones are skipped.
    ``on_tick`` receives every device's current values after each tick.
    """
    factory = Factory(specs, clock)
    await factory.start()
    loop = asyncio.get_running_loop()
    try:
        due = loop.time()
        while not stop.is_set():
            factory.tick()
            if on_tick is not None:
                on_tick(factory.snapshot())
            due += tick
            now = loop.time()
            if due < now:
                due = now
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), due - now)
    finally:
        await factory.close()
