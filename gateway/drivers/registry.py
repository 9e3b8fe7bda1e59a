"""Driver selection: one device object per configured device, keyed on ``DeviceConfig.driver``.

Every driver class has the same interface as
:class:`~gateway.drivers.modbus_tcp.ModbusTcpDevice`: ``__init__(config, point_ids, on_batch,
on_event, clock)``, ``async start()``/``stop()``, ``async write(point, value)`` and ``stats()``.
Drivers whose devices share a medium (an RTU line, a node socket, a CAN channel) get that shared
object from here, so two devices on one port never open it twice. Imports are lazy: a gateway
without serial or CAN devices never imports pyserial or python-can.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, SampleBatch


class Device(Protocol):
    """What the runtime needs from a driver's device object."""

    config: DeviceConfig

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def write(self, point: str, value: float) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class DeviceFactory:
    """Builds devices for one runtime; shared lines/sockets live as long as the factory."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.shared: dict[str, Any] = {}

    def create(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
    ) -> Device:
        args = (config, point_ids, on_batch, on_event, self.clock)
        if config.driver == "modbus_tcp":
            from gateway.drivers.modbus_tcp import ModbusTcpDevice

            return ModbusTcpDevice(*args)
        if config.driver == "modbus_rtu":
            from gateway.drivers.modbus_rtu import (
                ModbusRtuDevice,
                SniffedRtuDevice,
                line_key,
                make_line,
            )

            key = line_key(config)
            line = self.shared.get(key)
            if line is None:
                line = self.shared[key] = make_line(config, self.clock)
            assert config.rtu is not None
            cls = SniffedRtuDevice if config.rtu.sniff else ModbusRtuDevice
            return cls(*args, line=line)
        if config.driver == "node":
            from gateway.drivers.node import NodeDevice, node_link

            return NodeDevice(*args, link=node_link(config, self.shared, self.clock))
        if config.driver == "can":
            from gateway.drivers.can import CanDevice

            return CanDevice(*args)
        if config.driver == "opcua":
            from gateway.drivers.opcua.device import OpcuaDevice

            return OpcuaDevice(*args)
        raise ValueError(f"{config.name}: unknown driver {config.driver!r}")
