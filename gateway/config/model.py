"""The typed configuration: the dataclasses every stage of the gateway codes against.

:mod:`gateway.config.loader` builds them from YAML once the whole file, rule files included, is
free of issues; the reference of every key is docs/config.md, generated from the option tables.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.config.models import ModelConfig
from gateway.config.opcua import OpcuaConfig
from gateway.model.assets import AssetsConfig

RegisterTable = Literal["holding", "input", "coil", "discrete"]
RegisterType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]
Order = Literal["big", "little"]


@dataclass(frozen=True)
class PointConfig:
    """One Modbus point of a device. Full name is ``<device>.<name>``."""

    name: str
    address: int | None = None  # register/coil address (Modbus drivers; required there)
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
    signal: str | None = None  # can driver: "MESSAGE.SIGNAL" of the DBC
    channel: int | None = None  # node driver: reading channel
    node: str | None = None  # opcua driver: the variable's NodeId, e.g. "ns=2;s=Press.Temp"
    range: tuple[float, float] | None = None  # measuring range [low, high] (information model)


@dataclass(frozen=True)
class RtuConfig:
    """Serial line and quirks of a Modbus RTU device (see gateway/drivers/modbus_rtu)."""

    port: str = "/dev/ttyUSB0"
    transport: Literal["serial", "tcp"] = "serial"
    baudrate: int = 9600
    bytesize: int = 8
    parity: Literal["none", "even", "odd"] = "none"
    stopbits: float = 1
    rs485: bool = False
    rts_level_for_tx: bool = True
    rts_delay_before_tx: float = 0.0
    rts_delay_after_tx: float = 0.0
    inter_frame: float | None = None  # None: 3.5 characters, 1.75 ms above 19200 baud
    retries: int = 1
    address_base: int = 0
    connect_delay: float = 0.0
    sniff: bool = False


@dataclass(frozen=True)
class CanConfig:
    """CAN bus settings of a CAN device (see gateway/drivers/can)."""

    interface: Literal["socketcan", "virtual"] = "socketcan"
    channel: str = "can0"
    bitrate: int = 500000
    dbc: str | None = None
    j1939: bool = False
    address: int | None = None  # our J1939 source address (answers RTS with CTS); None: listen
    batch_delay: float = 0.02
    batch_frames: int = 512
    stale_after: float = 5.0


@dataclass(frozen=True)
class NodeConfig:
    """Transport of a node-frame sensor node (see gateway/drivers/node)."""

    node_id: int
    transport: Literal["udp", "uart"] = "udp"
    listen: str = "127.0.0.1:47800"
    port: str = "/dev/ttyAMA0"
    baudrate: int = 115200
    stale_after: float = 30.0
    key_file: str | None = None  # the node's MAC key (hex); required unless insecure
    insecure: bool = False  # accept format-1 frames without a MAC from this node
    discovery: bool = False  # list unconfigured node ids seen on this socket or line


@dataclass(frozen=True)
class DeviceConfig:
    """A southbound device; ``driver`` says which of rtu/can/node/opcua settings apply."""

    name: str
    driver: str = "modbus_tcp"  # a name of gateway.drivers.registry.available()
    host: str = "127.0.0.1"
    port: int = 502
    unit_id: int = 1
    timeout: float = 1.0  # seconds per request
    max_registers: int = 125  # max registers per read request (coalescing limit)
    max_gap: int = 8  # registers of gap allowed inside one coalesced read
    max_in_flight: int = 1  # Modbus TCP: requests of a poll group pipelined on the connection
    reconnect_min: float = 0.5  # seconds, first reconnect backoff
    reconnect_max: float = 30.0  # seconds, backoff cap
    poll_groups: dict[str, float] = field(
        default_factory=lambda: {"default": 1.0}
    )  # name -> period s
    points: tuple[PointConfig, ...] = ()
    rtu: RtuConfig | None = None
    can: CanConfig | None = None
    node: NodeConfig | None = None
    settings: Any = None  # a third-party driver's own section, as its parse_config returned it
    opcua: OpcuaConfig | None = None


@dataclass(frozen=True)
class AlarmAction:
    message: str = ""  # template, e.g. "temperature {press1.temp:.1f} degC"


@dataclass(frozen=True)
class WriteAction:
    point: str  # full point name, must be writable
    value: str  # expression source, e.g. "0" or "press1.setpoint - 5"
    min_interval: float = 1.0  # s; closer writes to the same point are refused (rate limit)


@dataclass(frozen=True)
class LogAction:
    message: str
    level: str = "info"


@dataclass(frozen=True)
class EventAction:
    message: str  # template; sent upstream on the events (priority) stream


@dataclass(frozen=True)
class SetAction:
    point: str  # "virtual.<name>", declared under virtual_points
    value: str  # expression source


Action = AlarmAction | EventAction | WriteAction | SetAction | LogAction


@dataclass(frozen=True)
class VirtualPointConfig:
    """A point set by rules; full name ``virtual.<name>``."""

    name: str
    unit: str = ""
    description: str = ""


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
    hysteresis: float | None = None  # clear band for `x > limit`-shaped conditions
    clear_for: float = 0.0  # seconds the clear condition must hold
    cooldown: float = 0.0  # seconds after a firing during which the rule does not fire again
    repeat_count: int = 1  # fire on the N-th episode ...
    repeat_within: float = 0.0  # ... within this many seconds (0: every episode fires)
    # (key, line, column) of one-line `when`/`clear` values, so errors point into the file
    positions: tuple[tuple[str, int, int], ...] = field(default=(), compare=False)

    def same_logic(self, other: RuleConfig) -> bool:
        """Equal but for where it was written: a reload keeps such a rule's state."""
        return dataclasses.replace(self, source="") == dataclasses.replace(other, source="")


@dataclass(frozen=True)
class UplinkConfig:
    endpoints: tuple[str, ...] = ("tcp://127.0.0.1:7000",)
    queue: str = "var/queue.db"  # SQLite file of the durable queue
    batch_max_records: int = 1000  # group commit: at most this many records ...
    batch_max_delay: float = 0.05  # ... or this many seconds, whichever first
    buffer_bytes: int = 8 * 1024 * 1024  # payload waiting for a commit; beyond: dropped at source
    ack_timeout: float = 5.0  # seconds without an ACK before the socket is reopened and replayed
    max_in_flight: int = 10000  # records sent but not acked (the cloud's credit caps it further)
    insecure: bool = False  # plaintext TCP; must be chosen explicitly (CurveZMQ otherwise)
    server_key: str | None = None  # cloud public key file (CurveZMQ)
    key_dir: str | None = None  # directory holding <gateway.id>.key_secret
    stream_max_bytes: int | None = None  # per-stream quota of queued payload bytes; None = none
    quota_policy: str = "drop_oldest"  # or "block"


@dataclass(frozen=True)
class GatewayConfig:
    id: str
    data_dir: str = "var"
    metrics_listen: str | None = "127.0.0.1:9108"  # host:port for /metrics and /status, None = off
    ring_capacity: int = 128  # samples per point ring buffer (memory: 16 bytes per sample)
    stall_periods: int = 5  # poll periods without a batch before a device is restarted
    max_model_bytes: int = 32 << 20  # largest model file the cloud may send (update_model)
    tls_cert: str | None = None  # PEM certificate of the status listener (HTTPS); with tls_key
    tls_key: str | None = None
    api_open_read: bool = False  # API reads without login from any address (not only loopback)
    devices: tuple[DeviceConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    models: tuple[ModelConfig, ...] = ()  # TFLite models on windows (gateway.infer)
    source: str = ""  # path of the file this came from
    virtual_points: tuple[VirtualPointConfig, ...] = ()
    rule_files: tuple[str, ...] = ()  # resolved paths of the rule files (watched for reload)
    assets: AssetsConfig | None = None  # the information model (gateway.model); None: no assets:
