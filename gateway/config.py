"""Gateway configuration: one YAML file -> validated, typed objects.

The dataclasses below are the contract every stage codes against. Loading and validation
(file:line and key path in every error) live in this module too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RegisterTable = Literal["holding", "input", "coil", "discrete"]
RegisterType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]
Order = Literal["big", "little"]


@dataclass(frozen=True)
class PointConfig:
    """One Modbus point of a device. Full name is ``<device>.<name>``."""

    name: str
    address: int  # 0-based register/coil address as on the wire
    table: RegisterTable = "holding"
    type: RegisterType = "uint16"  # coil/discrete tables are always "bool"
    word_order: Order = "big"  # order of 16-bit words in 32/64-bit values
    byte_order: Order = "big"  # order of bytes inside each 16-bit word
    scale: float = 1.0  # engineering value = raw * scale + offset
    offset: float = 0.0
    unit: str = ""
    deadband: float | None = None  # None: every sample goes upstream; else only changes > deadband
    poll: str = "default"  # name of a poll group of the device
    writable: bool = False
    description: str = ""


@dataclass(frozen=True)
class DeviceConfig:
    """A Modbus TCP device."""

    name: str
    driver: Literal["modbus_tcp"] = "modbus_tcp"
    host: str = "127.0.0.1"
    port: int = 502
    unit_id: int = 1
    timeout: float = 1.0  # seconds per request
    max_registers: int = 125  # max registers per read request (coalescing limit)
    max_gap: int = 8  # registers of gap allowed inside one coalesced read
    reconnect_min: float = 0.5  # seconds, first reconnect backoff
    reconnect_max: float = 30.0  # seconds, backoff cap
    poll_groups: dict[str, float] = field(default_factory=lambda: {"default": 1.0})  # name -> period s
    points: tuple[PointConfig, ...] = ()


@dataclass(frozen=True)
class AlarmAction:
    message: str = ""  # template, e.g. "temperature {press1.temp:.1f} degC"


@dataclass(frozen=True)
class WriteAction:
    point: str  # full point name, must be writable
    value: str  # expression source, e.g. "0" or "press1.setpoint - 5"


@dataclass(frozen=True)
class LogAction:
    message: str


Action = AlarmAction | WriteAction | LogAction


@dataclass(frozen=True)
class RuleConfig:
    name: str
    when: str  # condition expression
    actions: tuple[Action, ...]
    for_: float = 0.0  # seconds the condition must hold before firing (YAML key "for")
    clear: str | None = None  # clear condition expression; default: "not (when)"
    severity: Literal["info", "warning", "minor", "major", "critical"] = "warning"
    enabled: bool = True
    source: str = ""  # "file:line" of the rule, for messages


@dataclass(frozen=True)
class UplinkConfig:
    endpoints: tuple[str, ...] = ("tcp://127.0.0.1:7000",)
    queue: str = "var/queue.db"  # SQLite file of the durable queue
    batch_max_records: int = 1000  # group commit: at most this many records ...
    batch_max_delay: float = 0.05  # ... or this many seconds, whichever first
    ack_timeout: float = 5.0  # seconds without an ACK before the socket is reopened and replayed
    max_in_flight: int = 10000  # records sent but not acked (the cloud's credit caps it further)
    insecure: bool = False  # plaintext TCP; the spine requires it to be set true explicitly
    server_key: str | None = None  # cloud public key file (CurveZMQ, uplink issue)
    key_dir: str | None = None


@dataclass(frozen=True)
class GatewayConfig:
    id: str
    data_dir: str = "var"
    metrics_listen: str | None = "127.0.0.1:9108"  # host:port for /metrics and /status, None = off
    devices: tuple[DeviceConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    source: str = ""  # path of the file this came from
