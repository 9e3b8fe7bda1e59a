"""Writes to OPC UA variables: the node's DataType respected, its AccessLevel checked first.

The first write to a point reads the node's DataType and UserAccessLevel (cached while the
session lasts). A node without CurrentWrite access is refused before anything is sent; a value
its DataType cannot hold (a fraction for an integer, out of range, a non-number) likewise. The
value goes out as a Variant of exactly that type: servers answer BadTypeMismatch otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from gateway.config import DeviceConfig
from gateway.drivers.modbus_tcp.device import WriteError

#: Integer built-in types: (VariantType value, minimum, maximum).
_INT_RANGES = {
    2: (-(2**7), 2**7 - 1), 3: (0, 2**8 - 1), 4: (-(2**15), 2**15 - 1), 5: (0, 2**16 - 1),
    6: (-(2**31), 2**31 - 1), 7: (0, 2**32 - 1), 8: (-(2**63), 2**63 - 1), 9: (0, 2**64 - 1),
}  # fmt: skip
_FLOATS = (10, 11)  # Float, Double
_BOOLEAN = 1
_CURRENT_WRITE = 0x02


def convert(point: str, vtype: int, value: float) -> bool | int | float:
    """``value`` as the Python value of built-in type ``vtype``; WriteError when it cannot be."""
    if not isinstance(value, int | float) or isinstance(value, bool) and vtype != _BOOLEAN:
        value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise WriteError(f"{point}: {value} cannot be written", refused=True)
    if vtype == _BOOLEAN:
        if value not in (0, 1):
            raise WriteError(f"{point}: the node is Boolean; write 0 or 1, not {value:g}",
                             refused=True)  # fmt: skip
        return bool(value)
    if vtype in _FLOATS:
        if vtype == 10 and abs(value) > 3.4028234663852886e38:
            raise WriteError(f"{point}: {value:g} is out of the Float range", refused=True)
        return float(value)
    if vtype in _INT_RANGES:
        lo, hi = _INT_RANGES[vtype]
        if value != int(value):
            raise WriteError(f"{point}: the node is an integer type; {value:g} has a fraction",
                             refused=True)  # fmt: skip
        if not lo <= int(value) <= hi:
            raise WriteError(f"{point}: {value:g} is out of the node's range {lo}..{hi}",
                             refused=True)  # fmt: skip
        return int(value)
    raise WriteError(f"{point}: the node's DataType (built-in type {vtype}) is not a number or "
                     "Boolean; it cannot be written from a rule", refused=True)  # fmt: skip


class NodeWriter:
    """Writes of one device's points (full names ``device.point``)."""

    def __init__(self, config: DeviceConfig) -> None:
        self.device = config.name
        self.points = {f"{config.name}.{p.name}": p for p in config.points}
        self._meta: dict[str, tuple[int, int]] = {}  # point -> (variant type, user access)
        self.writes = self.errors = 0

    def forget(self) -> None:
        self._meta.clear()

    async def write(self, client: Any, point: str, value: float) -> None:
        try:
            await self._write(client, point, value)
        except WriteError:
            self.errors += 1
            raise
        self.writes += 1

    async def _write(self, client: Any, point: str, value: float) -> None:
        from asyncua import ua

        spec = self.points.get(point)
        if spec is None:
            raise WriteError(f"{point}: not a point of device {self.device}", refused=True)
        if not spec.writable:
            raise WriteError(f"{point}: not writable (set writable: true)", refused=True)
        if client is None:
            raise WriteError(f"{point}: device {self.device} is offline")
        node = client.get_node(spec.node)
        try:
            meta = self._meta.get(point)
            if meta is None:
                vt = await node.read_data_type_as_variant_type()
                access = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
                meta = self._meta[point] = (int(vt.value), int(access.Value.Value or 0))
            vtype, access = meta
            if not access & _CURRENT_WRITE:
                raise WriteError(f"{point}: node {spec.node} is not writable (its AccessLevel "
                                 "lacks CurrentWrite for this user)", refused=True)  # fmt: skip
            v = convert(point, vtype, value)
            dv = ua.DataValue(ua.Variant(v, ua.VariantType(vtype)))
            await node.write_attribute(ua.AttributeIds.Value, dv)
        except WriteError:
            raise
        except ua.UaStatusCodeError as exc:
            raise WriteError(f"{point}: the server refused the write ({type(exc).__name__})",
                             refused=False) from None  # fmt: skip
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise WriteError(f"{point}: write failed: {exc or type(exc).__name__}") from None
