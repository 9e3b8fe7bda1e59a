"""Device specs of the simulated factories and the register encoding of their points.

The encoding here is written independently of the gateway's codec (``struct`` only), so a test
that polls a simulated device through the driver checks the codec against a second
implementation instead of against itself.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from gateway.config import DeviceConfig, Order, PointConfig, RegisterTable, RegisterType
from gateway.drivers.sim.signals import BenchModel, MotorModel, PressModel, PumpModel, SignalModel

_FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "float64": "d",
}
_INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
TABLES = ("coil", "discrete", "holding", "input")
#: mm/s the demo motor's vibration reaches under a normal load step: a healthy machine's load
#: changes do not take it into ISO 10816 zone D (the demo once did every 40 s, and its
#: critical alarm flapped).
DEMO_LOAD_EXCURSION = 5.0


@dataclass(frozen=True)
class SimPoint:
    """One simulated point: the model value ``name`` mapped onto a register or a bit.

    The fields mean the same as in :class:`gateway.config.PointConfig`, so a sim device can
    hand the gateway a matching configuration (:func:`device_config`).
    """

    name: str
    address: int
    table: str = "holding"
    type: str = "uint16"  # "bool" for coil/discrete
    word_order: str = "big"
    byte_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    writable: bool = False

    @property
    def words(self) -> int:
        """Registers (or bits) the point occupies."""
        return (
            1
            if self.type in ("bool", "int16", "uint16")
            else struct.calcsize(_FORMATS[self.type]) // 2
        )

    def encode(self, value: float) -> list[int]:
        """Engineering value -> raw registers in wire order (clamped to the type's range)."""
        raw = (value - self.offset) / self.scale
        fmt = _FORMATS[self.type]
        if self.type in _INT_RANGES:
            lo, hi = _INT_RANGES[self.type]
            raw = min(hi, max(lo, round(raw)))
        data = struct.pack(">" + fmt, raw)
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        if self.word_order == "little":
            words.reverse()
        if self.byte_order == "little":
            words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
        return words

    def decode(self, words: list[int]) -> float:
        """Raw registers in wire order -> engineering value (for client writes)."""
        if self.byte_order == "little":
            words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
        if self.word_order == "little":
            words = list(reversed(words))
        data = b"".join(w.to_bytes(2, "big") for w in words)
        (raw,) = struct.unpack(">" + _FORMATS[self.type], data)
        return float(raw) * self.scale + self.offset


@dataclass(frozen=True)
class SimDeviceSpec:
    """A simulated Modbus TCP device: where it listens, its register map and its machine.

    ``port`` 0 picks a free port when the server starts (see ``Factory.ports``). ``model``
    builds a fresh signal model, so one spec can be run many times from the same start state.
    """

    name: str
    port: int
    points: tuple[SimPoint, ...]
    model: Callable[[], SignalModel]
    unit_id: int = 1
    host: str = "127.0.0.1"
    description: str = ""

    def table_points(self, table: str) -> list[SimPoint]:
        return sorted((p for p in self.points if p.table == table), key=lambda p: p.address)


def demo_factory(base_port: int = 5020) -> list[SimDeviceSpec]:
    """The three machines of ``examples/demo.yaml``, register map for register map."""
    press = SimDeviceSpec(
        "press1",
        base_port,
        (
            SimPoint("temp", 0, type="float32", unit="degC"),
            SimPoint("pressure", 2, type="uint16", scale=0.01, unit="bar"),
            SimPoint("vibration", 3, type="int16", scale=0.001, unit="mm/s"),
            SimPoint("parts", 4, type="uint32", unit="parts"),
            SimPoint("run", 0, table="coil", type="bool", writable=True),
        ),
        PressModel,
        description="Hydraulic press: heats while running, the overheat rule stops it",
    )
    pump = SimDeviceSpec(
        "pump1",
        base_port + 1,
        (
            SimPoint("flow", 0, table="input", type="float32", word_order="little", unit="m3/h"),
            SimPoint("pressure", 2, table="input", type="int16", scale=0.1, unit="bar"),
            SimPoint("setpoint", 10, type="uint16", scale=0.1, unit="m3/h", writable=True),
        ),
        PumpModel,
        description="Centrifugal pump: flow follows the writable setpoint",
    )
    motor = SimDeviceSpec(
        "motor1",
        base_port + 2,
        (
            SimPoint("current", 0, type="uint16", scale=0.01, unit="A"),
            SimPoint("vibration", 1, type="float32", word_order="little", unit="mm/s"),
            SimPoint("temp", 3, type="int16", scale=0.1, unit="degC"),
        ),
        functools.partial(
            MotorModel,
            excursion_level=DEMO_LOAD_EXCURSION,
            bearing_fault_at=45.0,
            bearing_fault_every=120.0,
            bearing_fault_len=40.0,
        ),
        description="Induction motor: vibration ~4 mm/s, a load excursion to 5 mm/s for 5 s every "
        "40 s, and a bearing fault from 45 s to 85 s of every 120 s",
    )
    return [press, pump, motor]


def _bench_points(n_registers: int) -> tuple[SimPoint, ...]:
    """First half uint16 registers, second half float32 pairs (an odd last one is uint16)."""
    n_u16 = n_registers // 2
    points = [SimPoint(f"r{a}", a, type="uint16") for a in range(n_u16)]
    a = n_u16
    while a + 2 <= n_registers:
        points.append(SimPoint(f"r{a}", a, type="float32"))
        a += 2
    if a < n_registers:
        points.append(SimPoint(f"r{a}", a, type="uint16"))
    return tuple(points)


def bench_factory(n_devices: int, n_registers: int, base_port: int) -> list[SimDeviceSpec]:
    """``n_devices`` load generators with ``n_registers`` holding registers each (mixed uint16
    and float32). ``base_port`` 0 gives every device a free port."""
    if n_devices < 1 or not 1 <= n_registers <= 10000:
        raise ValueError("need n_devices >= 1 and 1 <= n_registers <= 10000")
    points = _bench_points(n_registers)
    names = [p.name for p in points]
    specs = []
    for i in range(n_devices):

        def model(seed: int = i) -> SignalModel:
            return BenchModel(names, seed=seed)

        port = 0 if base_port == 0 else base_port + i
        specs.append(SimDeviceSpec(f"bench{i}", port, points, model))
    return specs


def device_config(
    spec: SimDeviceSpec,
    port: int | None = None,
    period: float = 1.0,
    timeout: float = 1.0,
    **options: object,
) -> DeviceConfig:
    """A gateway DeviceConfig that polls every point of ``spec`` in one poll group."""
    points = tuple(
        PointConfig(
            name=p.name,
            address=p.address,
            table=cast(RegisterTable, p.table),
            type=cast(RegisterType, p.type),
            word_order=cast(Order, p.word_order),
            byte_order=cast(Order, p.byte_order),
            scale=p.scale,
            offset=p.offset,
            unit=p.unit,
            writable=p.writable,
        )
        for p in spec.points
    )
    return DeviceConfig(
        name=spec.name,
        host=spec.host,
        port=spec.port if port is None else port,
        unit_id=spec.unit_id,
        timeout=timeout,
        poll_groups={"default": period},
        points=points,
        **options,  # type: ignore[arg-type]
    )
