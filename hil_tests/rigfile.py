"""The rig file: what a test rig has, so the same tests run on the simulated rig and real hardware.

The schema is documented for rig operators in hil_tests/README.md; this module checks a file against
it with messages that name the key and say what to write, and answers the questions tests ask
("may I write this output?", "is there simulated physics?") so a test the rig cannot serve is
skipped with its reason instead of failing or, worse, driving a real output nobody allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TOP_KEYS = {
    "name",
    "description",
    "devices",
    "serial",
    "can",
    "sim",
    "gateway",
    "cloud",
    "writable",
}
DEVICE_KEYS = {"host", "port", "unit_id"}
SERIAL_KEYS = {"path", "baudrate", "parity", "stopbits", "unit_id"}
CAN_KEYS = {"interface", "bitrate"}
GATEWAY_KEYS = {"config", "status"}
CLOUD_KEYS = {"bind", "pub"}
SIM_KEYS = {"factory", "base_port", "speed"}


class RigFileError(ValueError):
    """The rig file does not match the schema; the message names the file and key."""


@dataclass
class RigSpec:
    path: Path
    name: str
    raw: dict[str, Any]
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    serial: dict[str, dict[str, Any]] = field(default_factory=dict)
    can: list[dict[str, Any]] = field(default_factory=list)
    writable: frozenset[str] = frozenset()

    @property
    def simulated(self) -> bool:
        """Simulated physics: the rig can drive a process value (an overheat) on purpose."""
        return "sim" in self.raw

    def may_write(self, point: str) -> bool:
        """Whether tests may write ``device.point`` on this rig (the simulated rig: any point)."""
        return (
            self.simulated or point in self.writable or f"{point.split('.')[0]}.*" in self.writable
        )

    def missing_interfaces(self) -> list[str]:
        """Declared serial devices and CAN interfaces this machine does not have."""
        out = [
            f"serial.{n}: {d['path']} does not exist"
            for n, d in self.serial.items()
            if not os.path.exists(d["path"])
        ]
        out += [
            f"can: interface {c['interface']} does not exist (ip link add / a CAN adapter)"
            for c in self.can
            if not os.path.exists(f"/sys/class/net/{c['interface']}")
        ]
        return out


def _mapping(where: str, value: Any, keys: set[str], required: set[str] = frozenset()) -> dict:  # type: ignore[assignment]
    if not isinstance(value, dict):
        raise RigFileError(f"{where}: expected a mapping with keys {sorted(keys)}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise RigFileError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(keys)}")
    missing = sorted(required - set(value))
    if missing:
        raise RigFileError(f"{where}: missing {missing}")
    return value


def load_rig(path: Path) -> RigSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RigFileError(f"{path}: cannot read the rig file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RigFileError(f"{path}: not valid YAML: {exc}") from None
    name = path.name
    _mapping(name, raw, TOP_KEYS, {"name", "gateway", "cloud", "devices"})
    _mapping(f"{name}: gateway", raw["gateway"], GATEWAY_KEYS, {"config", "status"})
    _mapping(f"{name}: cloud", raw["cloud"], CLOUD_KEYS, {"bind", "pub"})
    if "sim" in raw:
        _mapping(f"{name}: sim", raw["sim"], SIM_KEYS, {"factory", "base_port"})
    devices = _mapping(f"{name}: devices", raw["devices"] or {}, set(raw["devices"] or {}))
    for dev, where in devices.items():
        _mapping(f"{name}: devices.{dev}", where, DEVICE_KEYS, {"host", "port"})
        if not isinstance(where["port"], int) or not 0 < where["port"] < 65536:
            raise RigFileError(f"{name}: devices.{dev}.port: expected a TCP port, got {where['port']!r}")  # fmt: skip
    serial = raw.get("serial") or {}
    _mapping(f"{name}: serial", serial, set(serial))
    for dev, spec in serial.items():
        _mapping(f"{name}: serial.{dev}", spec, SERIAL_KEYS, {"path"})
    can = raw.get("can") or []
    if not isinstance(can, list):
        raise RigFileError(f"{name}: can: expected a list of {{interface, bitrate}}")
    for i, spec in enumerate(can):
        _mapping(f"{name}: can[{i}]", spec, CAN_KEYS, {"interface"})
    writable = raw.get("writable") or []
    if not isinstance(writable, list) or not all(isinstance(w, str) and "." in w for w in writable):
        raise RigFileError(f"{name}: writable: expected a list of device.point (or device.*)")
    return RigSpec(
        path=path,
        name=str(raw["name"]),
        raw=raw,
        devices=devices,
        serial=serial,
        can=can,
        writable=frozenset(writable),
    )
