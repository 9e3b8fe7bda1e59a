"""What a configuration needs installed beyond the core: each driver's and the models' library.

A driver imports its library only when a device uses it (a Modbus TCP gateway never imports
pyserial), so a missing library used to show up late: a raw ImportError from the CAN driver, RTU
devices that silently stayed "unknown". ``gateway check`` and ``gateway run`` ask this module
first and name the package to install. It looks with :func:`importlib.util.find_spec`, which finds
a module without importing it, so checking costs nothing and imports nothing heavy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config.model import DeviceConfig
from gateway.config.models import ModelConfig


@dataclass(frozen=True)
class Requirement:
    """A library, found under any of ``modules`` (alternatives), installed as ``package``."""

    modules: tuple[str, ...]
    package: str  # the pip name
    debian: str | None = None  # the Debian / Raspberry Pi OS package, where there is one
    note: str = ""

    def install(self) -> str:
        """How to install it, the ways there are."""
        how = f"pip install {self.package}"
        if self.debian:
            how += f" (Debian, Raspberry Pi OS: sudo apt install {self.debian})"
        return how + (f"; {self.note}" if self.note else "")


PYSERIAL = Requirement(("serial",), "pyserial", "python3-serial")
PYTHON_CAN = Requirement(("can",), "python-can", "python3-can")
CANTOOLS = Requirement(("cantools",), "cantools")
ASYNCUA = Requirement(
    ("asyncua",), "asyncua", note="no Debian package; the gateway's .deb ships it (pinned)"
)
LITERT = Requirement(
    ("ai_edge_litert", "tflite_runtime"),
    "ai-edge-litert",
    note="where LiteRT has no wheel (32-bit ARM, JetPack 5): pip install tflite-runtime 'numpy<2'",
)


@dataclass(frozen=True)
class Missing:
    """One device or model whose library is not installed."""

    kind: str  # "device" | "model"
    name: str
    what: str  # "driver modbus_rtu on /dev/ttyUSB0", "TFLite model"
    requirement: Requirement

    def __str__(self) -> str:
        req = self.requirement
        return (
            f"{self.kind} '{self.name}' ({self.what}) needs {req.package}, which is not "
            f"installed; install it: {req.install()}"
        )


def device_requirements(device: DeviceConfig) -> list[tuple[Requirement, str]]:
    """The libraries ``device``'s driver imports as configured, each with why."""
    out: list[tuple[Requirement, str]] = []
    rtu, can, node = device.rtu, device.can, device.node
    if device.driver == "modbus_rtu" and rtu is not None and rtu.transport == "serial":
        out.append((PYSERIAL, f"driver modbus_rtu on serial port {rtu.port}"))
    if device.driver == "node" and node is not None and node.transport == "uart":
        out.append((PYSERIAL, f"driver node on serial port {node.port}"))
    if device.driver == "can" and can is not None:
        if can.interface != "socketcan":  # socketcan is read through a raw socket
            out.append((PYTHON_CAN, f"driver can, interface {can.interface}"))
        if can.dbc is not None:
            out.append((CANTOOLS, f"driver can, DBC {can.dbc}"))
    if device.driver == "opcua" and device.opcua is not None:
        out.append((ASYNCUA, f"driver opcua, {device.opcua.endpoint}"))
    return out


def missing_dependencies(
    devices: Iterable[DeviceConfig], models: Iterable[ModelConfig]
) -> list[Missing]:
    """Every configured device and model whose library cannot be found, in config order."""
    out = [
        Missing("device", device.name, why, req)
        for device in devices
        for req, why in device_requirements(device)
        if not installed(req)
    ]
    if not installed(LITERT):
        out.extend(Missing("model", m.name, "TFLite model", LITERT) for m in models)
    return out


def installed(requirement: Requirement) -> bool:
    """True when one of the requirement's modules can be imported (found, not imported)."""
    for module in requirement.modules:
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):  # a finder that refuses it, a broken __spec__
            continue
    return False
