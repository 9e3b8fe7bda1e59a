"""Southbound Modbus RTU driver: shared serial (or RTU-over-TCP) lines, polling and sniffing.

See README.md in this folder for the behaviour and ``sample.yaml`` for every option.
"""

from gateway.drivers.modbus_rtu.device import ModbusRtuDevice
from gateway.drivers.modbus_rtu.line import (
    LineClosed,
    RtuLine,
    SerialLine,
    TcpRtuLine,
    TransactionTimeout,
    char_time,
    inter_frame_gap,
    line_key,
    make_line,
    rtu_frame,
)
from gateway.drivers.modbus_rtu.sniffer import SniffedRtuDevice

__all__ = [
    "LineClosed",
    "ModbusRtuDevice",
    "RtuLine",
    "SerialLine",
    "SniffedRtuDevice",
    "TcpRtuLine",
    "TransactionTimeout",
    "char_time",
    "inter_frame_gap",
    "line_key",
    "make_line",
    "rtu_frame",
]
