"""The one place that picks the compiled or the pure-Python twin of each native module.

``GATEWAY_PUREPYTHON=1`` forces the pure twins. ``GATEWAY_REQUIRE_NATIVE=1`` turns a missing
compiled module into an ImportError instead of a silent fallback, so a test run that is meant to
exercise the compiled code cannot quietly test the twins instead.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

NATIVE_MODULES = ("modbus", "ringbuf", "node_frame", "can", "opcua")

_log = logging.getLogger(__name__)


def _pick(name: str) -> tuple[ModuleType, bool]:
    if os.environ.get("GATEWAY_PUREPYTHON") == "1":
        return importlib.import_module(f"gateway._pure.{name}"), False
    try:
        return importlib.import_module(f"gateway._native.{name}"), True
    except ImportError:
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        _log.warning("compiled gateway._native.%s not built; using the pure-Python twin", name)
        return importlib.import_module(f"gateway._pure.{name}"), False


_picked: dict[str, tuple[ModuleType, bool]] = {}


def _module(name: str) -> tuple[ModuleType, bool]:
    if name not in _picked:
        _picked[name] = _pick(name)
    return _picked[name]


class _Implementation(Mapping[str, str]):
    """Which implementation each native module resolved to: "native" or "pure" (reading an
    entry loads that module)."""

    def __getitem__(self, name: str) -> str:
        if name not in NATIVE_MODULES:
            raise KeyError(name)
        return "native" if _module(name)[1] else "pure"

    def __iter__(self) -> Iterator[str]:
        return iter(NATIVE_MODULES)

    def __len__(self) -> int:
        return len(NATIVE_MODULES)


#: Which implementation each native module resolved to: "native" or "pure".
IMPLEMENTATION: Mapping[str, str] = _Implementation()

if TYPE_CHECKING:
    from gateway._pure import can, modbus, node_frame, opcua, ringbuf


def __getattr__(name: str) -> ModuleType:
    """Each module is imported when first asked for (PEP 562): a Modbus-only gateway does not
    map the OPC UA, CAN and node codecs (~4 MB of RSS together)."""
    if name in NATIVE_MODULES:
        return _module(name)[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IMPLEMENTATION", "NATIVE_MODULES", "can", "modbus", "node_frame", "opcua", "ringbuf"]
