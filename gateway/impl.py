"""The one place that picks the compiled or the pure-Python twin of each native module.

``GATEWAY_PUREPYTHON=1`` forces the pure twins. ``GATEWAY_REQUIRE_NATIVE=1`` turns a missing
compiled module into an ImportError instead of a silent fallback, so a test run that is meant to
exercise the compiled code cannot quietly test the twins instead.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

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


modbus, _modbus_native = _pick("modbus")
ringbuf, _ringbuf_native = _pick("ringbuf")
node_frame, _node_frame_native = _pick("node_frame")
can, _can_native = _pick("can")
opcua, _opcua_native = _pick("opcua")

#: Which implementation each native module resolved to: "native" or "pure".
IMPLEMENTATION = {
    "modbus": "native" if _modbus_native else "pure",
    "ringbuf": "native" if _ringbuf_native else "pure",
    "node_frame": "native" if _node_frame_native else "pure",
    "can": "native" if _can_native else "pure",
    "opcua": "native" if _opcua_native else "pure",
}

__all__ = ["IMPLEMENTATION", "NATIVE_MODULES", "can", "modbus", "node_frame", "opcua", "ringbuf"]
