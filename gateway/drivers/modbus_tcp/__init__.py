"""Southbound Modbus TCP driver: coalesced, scheduled polling and writes over asyncio.

See README.md in this folder for the behaviour and ``sample.yaml`` for every option.
"""

from gateway.drivers.modbus_tcp.device import OFFLINE_AFTER_FAILURES, ModbusTcpDevice, WriteError
from gateway.drivers.modbus_tcp.plan import PollGroup, PollPlan, ReadBlock, build_plan

__all__ = [
    "OFFLINE_AFTER_FAILURES",
    "ModbusTcpDevice",
    "PollGroup",
    "PollPlan",
    "ReadBlock",
    "WriteError",
    "build_plan",
]
