"""Southbound CAN driver (python-can; SocketCAN on targets) with DBC signals and J1939.

See README.md in this folder for the behaviour and ``sample.yaml`` for every option.
"""

from gateway.drivers.can.dbc import DbcError, compile_layout, load_dbc
from gateway.drivers.can.device import CanDevice
from gateway.drivers.can.j1939 import TransportReassembler

__all__ = ["CanDevice", "DbcError", "TransportReassembler", "compile_layout", "load_dbc"]
