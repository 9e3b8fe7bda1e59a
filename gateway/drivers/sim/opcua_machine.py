"""The demo factory's OPC UA machine: an injection-moulding machine served by asyncua's server.

The other demo machines are Modbus devices (``server.py``); this one is what a modern machine
looks like: variables with a DataType, a Description, EngineeringUnits and an EURange, a writable
setpoint and run switch, one String. Discovery (``gateway discover opcua``) reads all of that
from it, which is how ``examples/opcua-machine.yaml`` was made. ``gateway sim --factory opcua``
runs it alone; ``gateway demo`` starts it on its own port (``DemoPorts.opcua``).

The physics (:class:`MouldingModel`) is a deterministic function of time and a seeded RNG, like
``signals.py``'s models, so tests drive it with an injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.drivers.sim.signals import _Clocked, first_order

if TYPE_CHECKING:
    from asyncua import Node, Server

log = logging.getLogger("gateway.sim.opcua")


def _ua() -> Any:
    """asyncua's ``ua`` module, untyped: its NewType aliases (Int16, String...) make every
    NodeId(...) call a type error though asyncua takes plain ints and strings."""
    from asyncua import ua

    return ua


NAMESPACE = "urn:edge-gateway:demo:moulding"
OBJECT = "Moulding1"
DEFAULT_PORT = 4840
#: EngineeringUnits' namespace for the UNECE Recommendation 20 common codes (OPC UA Part 8).
UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"


def unece_id(code: str) -> int:
    """UnitId of a UNECE common code: its (up to three) ASCII letters as one integer (Part 8)."""
    value = 0
    for ch in code:
        value = (value << 8) | ord(ch)
    return value


class MouldingModel(_Clocked):
    """An injection-moulding machine making one part per ``cycle`` seconds while running.

    A cycle is: inject (screw forward 120 -> 20 mm, pressure up to ~1,200 bar), hold
    (~600 bar), cool with the screw recovering (plasticising the next shot), eject. The barrel
    heats towards the writable ``barrel_setpoint`` (tau 40 s); the mould warms a little with
    each shot and is cooled towards 45 degC by its water. Stopped, pressure and screw rest and
    the barrel keeps its temperature (the heater bands stay on).
    """

    PHASES = (("inject", 0.15), ("hold", 0.25), ("cool", 0.5), ("eject", 0.1))

    def __init__(self, seed: int = 4, cycle: float = 10.0, running: bool = True) -> None:
        super().__init__(seed)
        self.cycle = cycle
        self.running = running
        self.barrel_setpoint = 230.0
        self.barrel = 215.0
        self.mould = 48.0
        self.shots = 0
        self.phase_t = 0.0  # seconds into the current cycle
        self.last_cycle = cycle
        self.pressure = 0.0
        self.screw = 120.0

    def phase(self) -> str:
        if not self.running:
            return "idle"
        frac = self.phase_t / self.cycle
        for name, share in self.PHASES:
            if frac < share:
                return name
            frac -= share
        return "eject"

    def update(self, t: float) -> None:
        dt = self._advance(t)
        if dt <= 0.0:
            return
        self.barrel = first_order(self.barrel, self.barrel_setpoint, dt, 40.0)
        if not self.running:
            self.pressure = first_order(self.pressure, 0.0, dt, 0.3)
            self.mould = first_order(self.mould, 45.0, dt, 30.0)
            return
        self.phase_t += dt
        while self.phase_t >= self.cycle:
            self.phase_t -= self.cycle
            self.shots += 1
            self.last_cycle = self.cycle
        frac = self.phase_t / self.cycle
        inject, hold, cool = (share for _, share in self.PHASES[:3])
        if frac < inject:  # screw forward, pressure rising
            k = frac / inject
            self.screw = 120.0 - 100.0 * k
            self.pressure = 1200.0 * math.sin(0.5 * math.pi * k)
            self.mould = first_order(self.mould, 62.0, dt, 4.0)
        elif frac < inject + hold:
            self.screw = 20.0
            self.pressure = first_order(self.pressure, 600.0, dt, 0.2)
        elif frac < inject + hold + cool:  # screw recovers while the part cools
            k = (frac - inject - hold) / cool
            self.screw = 20.0 + 100.0 * min(1.0, 1.6 * k)
            self.pressure = first_order(self.pressure, 40.0, dt, 0.3)
            self.mould = first_order(self.mould, 45.0, dt, 12.0)
        else:
            self.screw = 120.0
            self.pressure = first_order(self.pressure, 0.0, dt, 0.1)

    def values(self) -> dict[str, Any]:
        return {
            "BarrelTemperature": self.barrel + self.noise(0.1),
            "MouldTemperature": self.mould + self.noise(0.05),
            "InjectionPressure": max(0.0, self.pressure + self.noise(2.0)),
            "ScrewPosition": max(0.0, self.screw + self.noise(0.05)),
            "CycleTime": self.last_cycle + (self.noise(0.02) if self.running else 0.0),
            "ShotCount": self.shots,
            "Phase": self.phase(),
            "Running": self.running,
            "BarrelSetpoint": self.barrel_setpoint,
        }

    def write(self, name: str, value: float) -> None:
        if name == "Running":
            self.running = bool(value)
        elif name == "BarrelSetpoint":
            self.barrel_setpoint = min(300.0, max(150.0, float(value)))
        else:
            raise KeyError(f"moulding machine: {name!r} is not writable")


@dataclass(frozen=True)
class MachineVar:
    """One variable of the machine: its OPC UA type and what discovery should find."""

    name: str
    vtype: str  # asyncua VariantType name
    description: str
    unit: tuple[str, str, str] | None = None  # (UNECE code, display name, description)
    eu_range: tuple[float, float] | None = None
    writable: bool = False


VARIABLES = (
    MachineVar("BarrelTemperature", "Double", "Barrel (melt) temperature, zone 2",
               ("CEL", "°C", "degree Celsius"), (0.0, 350.0)),
    MachineVar("MouldTemperature", "Double", "Mould surface temperature",
               ("CEL", "°C", "degree Celsius"), (0.0, 150.0)),
    MachineVar("InjectionPressure", "Double", "Hydraulic injection pressure",
               ("BAR", "bar", "bar [unit of pressure]"), (0.0, 2500.0)),
    MachineVar("ScrewPosition", "Double", "Screw position from the front end",
               ("MMT", "mm", "millimetre"), (0.0, 200.0)),
    MachineVar("CycleTime", "Double", "Duration of the last completed cycle",
               ("SEC", "s", "second [unit of time]"), (0.0, 120.0)),
    MachineVar("ShotCount", "UInt32", "Shots (parts) since start"),
    MachineVar("Phase", "String", "Cycle phase: inject, hold, cool, eject or idle"),
    MachineVar("Running", "Boolean", "Run switch: false stops the cycle, true resumes it",
               writable=True),
    MachineVar("BarrelSetpoint", "Double", "Barrel temperature setpoint (150..300)",
               ("CEL", "°C", "degree Celsius"), (150.0, 300.0), writable=True),
)  # fmt: skip
WRITABLE = tuple(v.name for v in VARIABLES if v.writable)


async def add_variable(
    server: Server,
    parent: Node,
    ns: int,
    name: str,
    value: Any,
    vtype: str,
    description: str = "",
    unit: tuple[str, str, str] | None = None,
    eu_range: tuple[float, float] | None = None,
    writable: bool = False,
    prefix: str = OBJECT,
    datatype: int | None = None,
) -> Node:
    """A variable as a real machine's server has it: DataType, Description, and the
    EngineeringUnits and EURange properties of an analog item (OPC UA Part 8) when given.

    Shared with the tests' asyncua server (tests/opcua_support.py), so both describe units alike.
    ``datatype``: a namespace-0 DataType id other than the Variant's own (290 Duration...).
    """
    ua = _ua()

    nid = ua.NodeId(f"{prefix}.{name}", ns)
    vt = getattr(ua.VariantType, vtype)
    dt = ua.NodeId(datatype) if datatype is not None else None  # a subtype: Duration, an enum...
    var = await parent.add_variable(nid, ua.QualifiedName(name, ns), value, vt, datatype=dt)
    if description:
        await var.write_attribute(
            ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(description)))
        )
    if unit is not None:
        code, shown, meaning = unit
        info = ua.EUInformation(
            NamespaceUri=UNECE_URI,
            UnitId=unece_id(code),
            DisplayName=ua.LocalizedText(shown),
            Description=ua.LocalizedText(meaning),
        )
        await var.add_property(
            ua.NodeId(f"{nid.Identifier}.EngineeringUnits", ns),
            ua.QualifiedName("EngineeringUnits", 0),
            info,
            datatype=ua.NodeId(ua.ObjectIds.EUInformation),
        )
    if eu_range is not None:
        await var.add_property(
            ua.NodeId(f"{nid.Identifier}.EURange", ns),
            ua.QualifiedName("EURange", 0),
            ua.Range(Low=eu_range[0], High=eu_range[1]),
            datatype=ua.NodeId(ua.ObjectIds.Range),
        )
    if writable:
        await var.set_writable(True)
    return var


class MouldingMachine:
    """The machine's asyncua server on ``host:port``, its values moved every ``tick`` seconds.

    Client writes to ``Running`` and ``BarrelSetpoint`` reach the model on the next tick.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        tick: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host, self.port, self.tick, self.clock = host, port, tick, clock
        self.model = MouldingModel()
        self.endpoint = f"opc.tcp://{host}:{port}"
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._sent: dict[str, Any] = {}

    async def start(self) -> None:
        from asyncua import Server

        ua = _ua()

        server = Server()
        await server.init()
        server.set_endpoint(f"{self.endpoint}/")
        server.set_server_name("Demo injection-moulding machine (gateway sim)")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NAMESPACE)
        machine = await server.nodes.objects.add_object(
            ua.NodeId(OBJECT, ns), ua.QualifiedName(OBJECT, ns)
        )
        await machine.write_attribute(
            ua.AttributeIds.Description,
            ua.DataValue(ua.Variant(ua.LocalizedText("Injection-moulding machine, 80 t"))),
        )
        self.model.update(self.clock())
        values = self.model.values()
        for v in VARIABLES:
            self._nodes[v.name] = await add_variable(
                server, machine, ns, v.name, values[v.name], v.vtype, v.description,
                v.unit, v.eu_range, v.writable,
            )  # fmt: skip
            self._sent[v.name] = values[v.name]
        await server.start()
        self._server = server

    async def step(self) -> None:
        """Hand client writes to the model, advance it, publish its values."""
        ua = _ua()

        for name in WRITABLE:
            value = await self._nodes[name].read_value()
            if value != self._sent[name]:
                self.model.write(name, value)
        self.model.update(self.clock())
        vtypes = {v.name: getattr(ua.VariantType, v.vtype) for v in VARIABLES}
        for name, value in self.model.values().items():
            self._sent[name] = value
            await self._nodes[name].write_value(ua.Variant(value, vtypes[name]))

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        await self.start()
        log.info("OPC UA moulding machine on %s (namespace %s)", self.endpoint, NAMESPACE)
        try:
            while not stop.is_set():
                await self.step()
                try:
                    await asyncio.wait_for(stop.wait(), self.tick)
                except TimeoutError:
                    pass
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()


def run_machine(port: int, speed: float = 1.0) -> int:
    """``gateway sim --factory opcua``: serve the machine until SIGINT/SIGTERM."""
    from gateway.cli import run_until_signal, scaled_clock

    # asyncua's chatter and tracebacks: a failure is said once, below.
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    machine = MouldingMachine(port, clock=scaled_clock(speed))
    with socket.socket() as probe:  # a busy port said at once, not after the server's slow init
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((machine.host, port))
        except OSError as exc:
            log.error("cannot serve OPC UA on %s: %s", machine.endpoint, exc.strerror or exc)
            return 1
    try:
        run_until_signal(machine.run)
    except OSError as exc:
        log.error("cannot serve OPC UA on %s: %s", machine.endpoint, exc.strerror or exc)
        return 1
    return 0
