"""OPC UA client driver (asyncua for the session, our compiled decoder for the data path).

Imports asyncua only when a device is created, like every driver's library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.drivers.opcua.device import OpcuaDevice

__all__ = ["OpcuaDevice"]


def __getattr__(name: str) -> Any:
    if name == "OpcuaDevice":
        from gateway.drivers.opcua.device import OpcuaDevice

        return OpcuaDevice
    raise AttributeError(name)
