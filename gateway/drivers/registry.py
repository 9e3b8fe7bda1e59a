"""Driver registration: the ``gateway.drivers`` entry-point group, built-ins and third parties alike.

A driver is a class (normally a :class:`~gateway.drivers.base.DriverBase` subclass) named by an
entry point of the group ``gateway.drivers``; the entry point's name is the value of
``driver:`` in the config. The gateway declares its own four drivers in pyproject.toml the same
way a third-party package declares its one (see docs/drivers.md).

Both sources are read: the installed entry points, and :data:`BUILTIN`, the same table as
pyproject's, so the built-ins work from a source checkout or a copy whose package metadata is
missing or stale. A third-party entry point that reuses a built-in name is ignored with a
warning (the built-in stays). Imports are lazy: only the drivers a config uses are imported, so
a gateway without serial or CAN devices never imports pyserial or python-can.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, SampleBatch

_log = logging.getLogger("gateway.drivers")

GROUP = "gateway.drivers"

#: The built-in drivers, as in pyproject.toml's [project.entry-points."gateway.drivers"].
BUILTIN: dict[str, str] = {
    "modbus_tcp": "gateway.drivers.modbus_tcp:ModbusTcpDevice",
    "modbus_rtu": "gateway.drivers.modbus_rtu:ModbusRtuDevice",
    "node": "gateway.drivers.node:NodeDevice",
    "can": "gateway.drivers.can:CanDevice",
    "opcua": "gateway.drivers.opcua:OpcuaDevice",
}


class Device(Protocol):
    """What the runtime needs from a driver's device object (DriverBase provides all of it)."""

    config: DeviceConfig

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def write(self, point: str, value: float) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class DriverError(Exception):
    """A driver that cannot be used: unknown name, or its package fails to import."""


@cache
def available() -> dict[str, str]:
    """Driver name -> "module:attribute" of every installed driver (nothing is imported)."""
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        if ep.name in BUILTIN:
            if ep.value.replace(" ", "") != BUILTIN[ep.name]:
                dist = getattr(ep.dist, "name", "?")
                _log.warning("driver %r of package %s ignored: %r is a built-in driver",
                             ep.name, dist, ep.name)  # fmt: skip
            continue
        found.setdefault(ep.name, ep.value)
    return found


def unknown(name: str) -> str:
    """The message for a driver name that is not installed."""
    from gateway.config.reader import suggest

    names = ", ".join(sorted(available()))
    hint = suggest(name, available())
    return (f"unknown driver {name!r}{hint}; installed drivers: {names} (a third-party driver is a "
            f"package that declares a {GROUP!r} entry point; see docs/drivers.md)")  # fmt: skip


@cache
def load(name: str) -> Any:
    """The driver class of ``name``; DriverError when it is unknown or cannot be imported."""
    target = available().get(name)
    if target is None:
        raise DriverError(unknown(name))
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module.strip())
        for part in attr.strip().split(".") if attr else ():
            obj = getattr(obj, part)
    except Exception as exc:  # ImportError, AttributeError, or the module's own error
        raise DriverError(f"driver {name!r} ({target}) cannot be loaded: {exc}") from exc
    if not isinstance(obj, type):
        raise DriverError(f"driver {name!r} ({target}) is not a class but {type(obj).__name__}")
    return obj


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
        try:
            cls = load(config.driver)
        except DriverError as exc:
            raise ValueError(f"{config.name}: {exc}") from None
        create = getattr(cls, "create", None)
        if create is not None:
            device: Device = create(config, point_ids, on_batch, on_event, self.clock, self.shared)
            return device
        return cls(config, point_ids, on_batch, on_event, self.clock)  # type: ignore[no-any-return]
