"""Gateway configuration: one YAML file -> validated, typed objects.

The dataclasses below are the contract every stage codes against. Loading and validation
(file:line and key path in every error) live in this module too; the option tables they check
against are in :mod:`gateway.config_schema`, the YAML node reading in :mod:`gateway.config_yaml`.
The reference of every key is docs/config.md, generated from the tables.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config_input import InputError, read_text
from gateway.config_rules import read_rule_files, read_virtual_points, rule_positions
from gateway.config_schema import ACTIONS, REGISTER_WORDS, TABLES
from gateway.config_yaml import BAD, ConfigError, ConfigIssue, Parsed, Reader, join, suggest
from gateway.infer.config import ModelConfig, read_models

__all__ = [
    "AlarmAction", "Action", "CanConfig", "ConfigError", "ConfigIssue", "DeviceConfig",
    "EventAction", "GatewayConfig", "LogAction", "ModelConfig", "NodeConfig", "PointConfig",
    "RtuConfig", "RuleConfig", "SetAction", "UplinkConfig", "VirtualPointConfig", "WriteAction",
    "check_main", "format_issues", "load_config", "load_config_text",
]  # fmt: skip

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
    """A southbound device; ``driver`` says which of rtu/can/node settings apply."""

    name: str
    driver: Literal["modbus_tcp", "modbus_rtu", "can", "node"] = "modbus_tcp"
    host: str = "127.0.0.1"
    port: int = 502
    unit_id: int = 1
    timeout: float = 1.0  # seconds per request
    max_registers: int = 125  # max registers per read request (coalescing limit)
    max_gap: int = 8  # registers of gap allowed inside one coalesced read
    reconnect_min: float = 0.5  # seconds, first reconnect backoff
    reconnect_max: float = 30.0  # seconds, backoff cap
    poll_groups: dict[str, float] = field(
        default_factory=lambda: {"default": 1.0}
    )  # name -> period s
    points: tuple[PointConfig, ...] = ()
    rtu: RtuConfig | None = None
    can: CanConfig | None = None
    node: NodeConfig | None = None


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
    ring_capacity: int = 128  # samples per point ring buffer (memory: 32 bytes per sample)
    stall_periods: int = 5  # poll periods without a batch before a device is restarted
    max_model_bytes: int = 32 << 20  # largest model file the cloud may send (update_model)
    devices: tuple[DeviceConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    models: tuple[ModelConfig, ...] = ()  # TFLite models on windows (gateway.infer)
    source: str = ""  # path of the file this came from
    virtual_points: tuple[VirtualPointConfig, ...] = ()
    rule_files: tuple[str, ...] = ()  # resolved paths of the rule files (watched for reload)


# --- loading and validation ------------------------------------------------------------------
# The tables in gateway.config_schema check each mapping on its own; the functions below add
# what a table cannot express (uniqueness, cross references, defaults that depend on other keys)
# and build the dataclasses once the whole file, rule files included, is free of issues.


def load_config(path: str | Path) -> GatewayConfig:
    """Load and validate a config file.

    Relative paths inside it (``data_dir``, ``uplink.queue``, key files, ``rule_files``) are
    resolved against the directory of the file, never the working directory, so a config means
    the same thing wherever the gateway is started; the dataclasses hold absolute paths.

    Raises
    ------
    ConfigError
        With every issue found (file:line:column, key path, message); ``unreadable`` is set
        when the file is missing or is not YAML.
    """
    file = Path(path)
    try:
        text = read_text(file, what="config file")
    except FileNotFoundError:
        issue = ConfigIssue(str(path), 0, 0, "", "file not found")
        raise ConfigError([issue], unreadable=True) from None
    except InputError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", str(exc))], unreadable=True) from None
    resolved = file.resolve()
    loader = _Loader(str(path), resolved.parent)
    loader.read_bytes += len(text)
    return loader.load(text, str(resolved))


def load_config_text(
    text: str, filename: str = "<string>", *, base_dir: str | Path | None = None
) -> GatewayConfig:
    """Validate config text; ``filename`` is used in messages and as ``GatewayConfig.source``.

    Relative paths resolve against ``base_dir``, by default the directory of ``filename``.
    """
    base = Path(base_dir) if base_dir is not None else Path(filename).parent
    return _Loader(filename, base.resolve()).load(text, filename)


def format_issues(err: ConfigError | Iterable[ConfigIssue]) -> str:
    """One issue per line: ``file:line:column: key.path: message``."""
    issues = err.issues if isinstance(err, ConfigError) else err
    return "\n".join(str(issue) for issue in issues)


def check_main(path: str) -> int:
    """``gateway check FILE``: print the issues or a one-line summary.

    Returns 0 if the config is valid, 1 if it has issues, 2 if the file is missing or not YAML.
    """
    try:
        config = load_config(path)
    except ConfigError as err:
        count = len(err.issues)
        print(format_issues(err), file=sys.stderr)
        print(f"{path}: {count} issue{'' if count == 1 else 's'}", file=sys.stderr)
        return 2 if err.unreadable else 1
    points = sum(len(device.points) for device in config.devices)
    print(f"{path}: OK: {len(config.devices)} devices, {points} points, {len(config.rules)} rules")
    return 0


_READ_ONLY_TABLES = ("input", "discrete")
_BIT_TABLES = ("coil", "discrete")
_STRUCTURAL = ("section", "section_list", "actions", "rule_file_list", "params")


def _fields(parsed: Parsed, section: str) -> dict[str, Any]:
    """Dataclass keyword arguments for the scalar options of a parsed section."""
    options = TABLES[section].options
    return {opt.field: parsed.values[opt.key] for opt in options if opt.kind not in _STRUCTURAL}


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Loader:
    """One load: the main file, its rule files and the issues of all of them."""

    def __init__(self, file: str, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        self.main = Reader(file, base_dir, self.issues)
        self.files = [file]
        # full point name -> writable (None when its `writable` value was itself wrong);
        # None for a standalone rule file (no devices to check targets against)
        self.points: dict[str, bool | None] | None = {}
        self.virtual: set[str] = set()  # declared "virtual.<name>" points
        self.rule_file_paths: list[str] = []
        self.rule_names: dict[str, str] = {}  # name -> "file:line" of its first definition
        self.read_bytes = 0  # of every file of this load, against config_input.MAX_TOTAL_BYTES

    def load(self, text: str, source: str) -> GatewayConfig:
        root = self.main.compose(text)
        if root is None:
            syntax_error = bool(self.issues)
            if not syntax_error:
                self.main.error(None, "", "empty config; expected a mapping with a 'gateway' key")
            raise ConfigError(self.issues, unreadable=syntax_error)
        config = self._root(root, source)
        if self.issues or config is None:
            order = {file: i for i, file in enumerate(self.files)}
            self.issues.sort(key=lambda issue: (order[issue.file], issue.line, issue.column))
            raise ConfigError(self.issues)
        return config

    def _root(self, root: Node, source: str) -> GatewayConfig | None:
        top = self.main.section(root, "", TABLES["root"])
        if top is None:
            return None
        gateway = None
        if "gateway" in top.nodes and top.ok("gateway"):
            gateway = self.main.section(top.nodes["gateway"], "gateway", TABLES["gateway"])
        devices = self._devices(top)
        virtual = read_virtual_points(self, top)
        rules = [
            *self._rules(self.main, top, "rules"),
            *self._rule_files(top),
        ]
        uplink = self._uplink(top)
        devices_named = {d.name for d in devices if d is not None}
        models = read_models(self.main, top.values.get("models"), self.points or {}, devices_named)
        if self.issues or gateway is None or uplink is None:
            return None
        return GatewayConfig(
            **_fields(gateway, "gateway"),
            devices=tuple(d for d in devices if d is not None),
            rules=tuple(r for r in rules if r is not None),
            uplink=uplink,
            models=tuple(m for m in models if m is not None),
            source=source,
            virtual_points=virtual,
            rule_files=tuple(self.rule_file_paths),
        )

    # --- devices and points ------------------------------------------------------------------

    def _devices(self, top: Parsed) -> list[DeviceConfig | None]:
        node = top.values.get("devices")
        if not isinstance(node, Node):
            return []
        first: dict[str, int] = {}
        devices: list[DeviceConfig | None] = []
        for i, item in enumerate(node.value):
            path = join("devices", i)
            parsed = self.main.section(item, path, TABLES["device"])
            if parsed is None:
                devices.append(None)
                continue
            name = parsed.values["name"] if parsed.ok("name") else None
            if name is not None and name in first:
                msg = f"duplicate device name '{name}' (first at line {first[name]})"
                self.main.error(parsed.at("name"), join(path, "name"), msg)
                name = None
            elif name is not None:
                first[name] = _line(parsed.at("name"))
            devices.append(self._device(parsed, path, name))
        self._shared_lines(devices, node.value)
        return devices

    def _shared_lines(self, devices: list[DeviceConfig | None], items: list[Node]) -> None:
        """Devices on one serial line or node socket must agree on it and differ in address."""
        lines: dict[tuple[str, str], tuple[int, DeviceConfig]] = {}
        used: dict[tuple[str, str, int], str] = {}
        for i, dev in enumerate(devices):
            if dev is None:
                continue
            if dev.rtu is not None:
                rtu = dev.rtu
                where = rtu.port if rtu.transport == "serial" else f"{dev.host}:{dev.port}"
                line, unit = ("rtu", where), dev.unit_id
                if not rtu.sniff and not 1 <= unit <= 247:
                    msg = f"Modbus RTU slave ids are 1..247; got {unit}"
                    self.main.error(items[i], join("devices", i, "unit_id"), msg)
                first = lines.setdefault(line, (i, dev))
                other = first[1].rtu
                assert other is not None
                settings = ("baudrate", "bytesize", "parity", "stopbits", "rs485", "inter_frame",
                            "sniff")  # fmt: skip
                diff = [k for k in settings if getattr(other, k) != getattr(rtu, k)]
                if diff:
                    msg = (f"shares line {where} with device '{first[1].name}' but differs in "
                           f"{', '.join(diff)}; one line has one set of settings")  # fmt: skip
                    self.main.error(items[i], join("devices", i, "rtu"), msg)
            elif dev.node is not None:
                nd = dev.node
                line = ("node", nd.listen if nd.transport == "udp" else nd.port)
                unit = nd.node_id
            else:
                continue
            key = (*line, unit)
            if key in used:
                what = "unit_id" if line[0] == "rtu" else "node.node_id"
                msg = f"{what} {unit} is already used by device '{used[key]}' on {line[1]}"
                self.main.error(items[i], join("devices", i, what), msg)
            used[key] = dev.name

    def _device(self, parsed: Parsed, path: str, name: str | None) -> DeviceConfig | None:
        values = parsed.values
        if parsed.ok("reconnect_min", "reconnect_max"):
            if values["reconnect_max"] < values["reconnect_min"]:
                msg = f"must be >= reconnect_min ({values['reconnect_min']:g} s)"
                self.main.error(parsed.at("reconnect_max"), join(path, "reconnect_max"), msg)
        groups = values["poll_groups"] if parsed.ok("poll_groups") else None
        points: list[PointConfig | None] = []
        node = values.get("points")
        seen: dict[str, int] = {}
        for i, item in enumerate(node.value if isinstance(node, Node) else ()):
            point = self.main.section(item, join(path, "points", i), TABLES["point"])
            if point is not None and parsed.ok("driver"):
                self._point_target(point, values["driver"])
            points.append(None if point is None else self._point(point, name, groups, seen))
        driver = values["driver"] if parsed.ok("driver") else None
        settings = self._driver_settings(parsed, path, driver)
        if None in points or parsed.bad or settings is None:
            return None
        return DeviceConfig(
            **_fields(parsed, "device"),
            points=tuple(p for p in points if p is not None),
            **settings,
        )

    def _driver_settings(
        self, parsed: Parsed, path: str, driver: str | None
    ) -> dict[str, Any] | None:
        """The rtu/can/node section the driver needs; the others must be absent."""
        out: dict[str, Any] = {}
        ok = True
        for key, cls in (("rtu", RtuConfig), ("can", CanConfig), ("node", NodeConfig)):
            node = parsed.values.get(key)
            if key in parsed.bad:
                ok = False
                continue
            if driver is None:
                continue
            if node is None:
                if driver == f"modbus_{key}" or driver == key:
                    if key == "rtu":  # every rtu key has a default; still say which line
                        mark = parsed.node.start_mark
                        node = MappingNode("tag:yaml.org,2002:map", [], mark, mark)
                    else:
                        msg = f"driver {driver} needs a `{key}:` section (see docs/config.md)"
                        self.main.error(parsed.node, join(path, key), msg)
                        ok = False
                        continue
                else:
                    continue
            elif not (driver == key or driver == f"modbus_{key}"):
                msg = f"`{key}` settings do not apply to driver {driver}; remove them"
                self.main.error(parsed.at(key), join(path, key), msg)
                ok = False
                continue
            sub = self.main.section(node, join(path, key), TABLES[key])
            if sub is None or sub.bad:
                ok = False
                continue
            if key == "node" and not self._node_key(sub, join(path, key)):
                ok = False
                continue
            if key == "rtu" and sub.values["stopbits"] not in (1, 1.5, 2):
                msg = f"stop bits are 1, 1.5 or 2; got {sub.values['stopbits']}"
                self.main.error(sub.at("stopbits"), join(path, key, "stopbits"), msg)
                ok = False
                continue
            out[key] = cls(**_fields(sub, key))
        return out if ok else None

    def _node_key(self, sub: Parsed, path: str) -> bool:
        """A node has a readable key file, or says `insecure: true`; not both."""
        from gateway.drivers.node.keys import NodeKeyError, load_node_key

        key_file, insecure = sub.values["key_file"], sub.values["insecure"]
        if key_file is None and not insecure:
            msg = ("required unless insecure: true (unauthenticated node frames must be chosen "
                   "explicitly; create a key with `python -m gateway.drivers.node.keys new FILE`)")  # fmt: skip
            self.main.error(sub.at("key_file"), join(path, "key_file"), msg)
            return False
        if key_file is not None and insecure:
            msg = "a node with a key_file is not insecure; remove one of them"
            self.main.error(sub.at("insecure"), join(path, "insecure"), msg)
            return False
        if key_file is not None:
            try:
                load_node_key(key_file)
            except NodeKeyError as exc:
                self.main.error(sub.at("key_file"), join(path, "key_file"), str(exc))
                return False
        return True

    def _point_target(self, parsed: Parsed, driver: str) -> None:
        """Each driver finds a point by its own key: address, signal or channel."""
        need = {"can": "signal", "node": "channel"}.get(driver, "address")
        if need in parsed.bad:
            return
        if parsed.values.get(need) is None:
            msg = f"missing required key '{need}'"
            if need != "address":
                msg += f" (points of driver {driver} need it)"
            self.main.error(parsed.node, join(parsed.path, need), msg)
            parsed.bad.add(need)

    def _point(
        self, parsed: Parsed, device: str | None, groups: dict[str, float] | None,
        seen: dict[str, int],
    ) -> PointConfig | None:  # fmt: skip
        values, path, error = parsed.values, parsed.path, self.main.error
        if "type" not in parsed.nodes and values["table"] in _BIT_TABLES:
            values["type"] = "bool"
        if parsed.ok("name"):
            name = values["name"]
            if name in seen:
                msg = f"duplicate point name '{name}' (first at line {seen[name]})"
                error(parsed.at("name"), join(path, "name"), msg)
            else:
                seen[name] = _line(parsed.at("name"))
                if device is not None and self.points is not None:
                    writable = values["writable"] if parsed.ok("writable") else None
                    self.points[f"{device}.{name}"] = writable
        table, kind = values["table"], values["type"]
        if parsed.ok("table", "type"):
            if table in _BIT_TABLES and kind != "bool":
                msg = f"points in the {table} table are bool; got type '{kind}'"
                error(parsed.at("type"), join(path, "type"), msg)
            elif table not in _BIT_TABLES and kind == "bool":
                msg = f"bool points belong in the coil or discrete table; got table '{table}'"
                error(parsed.at("type"), join(path, "type"), msg)
            elif parsed.ok("address") and values["address"] is not None:
                words = REGISTER_WORDS[kind]
                if values["address"] + words > 65536:
                    msg = (f"{kind} needs {words} registers, so the address must be "
                           f"<= {65536 - words}; got {values['address']}")  # fmt: skip
                    error(parsed.at("address"), join(path, "address"), msg)
        if parsed.ok("table", "writable") and values["writable"] and table in _READ_ONLY_TABLES:
            msg = f"points in the {table} table are read-only; writable must be false"
            error(parsed.at("writable"), join(path, "writable"), msg)
        if groups is not None and parsed.ok("poll") and values["poll"] not in groups:
            poll, known = values["poll"], ", ".join(groups)
            if "poll" in parsed.nodes:
                msg = f"unknown poll group '{poll}'{suggest(poll, groups)}; the device has: {known}"
            else:
                msg = f"no `poll` given and the device has no 'default' poll group; it has: {known}"
            error(parsed.at("poll"), join(path, "poll"), msg)
        return None if parsed.bad else PointConfig(**_fields(parsed, "point"))

    # --- rules -----------------------------------------------------------------------------

    def _rules(self, reader: Reader, parsed: Parsed, key: str) -> list[RuleConfig | None]:
        node = parsed.values.get(key)
        if not isinstance(node, Node):
            return []
        return [self._rule(reader, item, join("rules", i)) for i, item in enumerate(node.value)]

    def _rule(self, reader: Reader, node: Node, path: str) -> RuleConfig | None:
        parsed = reader.section(node, path, TABLES["rule"])
        if parsed is None:
            return None
        source = f"{reader.file}:{_line(node)}"
        if parsed.ok("name"):
            name = parsed.values["name"]
            if name in self.rule_names:
                msg = f"duplicate rule name '{name}' (first defined at {self.rule_names[name]})"
                reader.error(parsed.at("name"), join(path, "name"), msg)
            else:
                self.rule_names[name] = source
        actions_node = parsed.values.get("actions")
        actions: list[Action | None] = []
        if isinstance(actions_node, Node):
            if not actions_node.value:
                reader.error(actions_node, join(path, "actions"), "expected at least one action")
            for i, item in enumerate(actions_node.value):
                actions.append(self._action(reader, item, join(path, "actions", i)))
        extra: dict[str, Any] = {"positions": rule_positions(parsed)}
        if parsed.ok("clear", "hysteresis") and parsed.values["hysteresis"] is not None:
            if parsed.values["clear"] is not None:
                msg = "give either `clear` or `hysteresis`, not both"
                reader.error(parsed.at("hysteresis"), join(path, "hysteresis"), msg)
        repeat = parsed.values.get("repeat")
        if isinstance(repeat, Node):
            rep = reader.section(repeat, join(path, "repeat"), TABLES["repeat"])
            if rep is None or rep.bad:
                return None
            extra.update(repeat_count=rep.values["count"], repeat_within=rep.values["within"])
        if parsed.bad or None in actions or not actions:
            return None
        return RuleConfig(
            **_fields(parsed, "rule"),
            actions=tuple(a for a in actions if a is not None),
            source=source,
            **extra,
        )

    def _action(self, reader: Reader, node: Node, path: str) -> Action | None:
        mapping = reader.mapping(node, path, "an action: alarm, event, write, set or log")
        if mapping is None:
            return None
        pairs = reader.pairs(mapping, path)
        if len(pairs) != 1:
            got = ", ".join(key for key, _, _ in pairs) or "nothing"
            reader.error(
                node, path, f"an action has exactly one key ({', '.join(ACTIONS)}); got {got}"
            )
            return None
        kind, key_node, value = pairs[0]
        apath = join(path, kind)
        if kind not in ACTIONS:
            msg = f"unknown action '{kind}'{suggest(kind, ACTIONS)}; valid actions: " + ", ".join(
                ACTIONS
            )
            reader.error(key_node, apath, msg)
            return None
        if kind == "write":
            parsed = reader.section(value, apath, TABLES["write"])
            if parsed is None:
                return None
            if parsed.ok("point"):
                self._check_write_target(reader, parsed.values["point"], parsed.at("point"), apath)
            return None if parsed.bad else WriteAction(**_fields(parsed, "write"))
        if kind == "set":
            parsed = reader.section(value, apath, TABLES["set"])
            if parsed is None:
                return None
            target = parsed.values.get("point")
            if parsed.ok("point") and self.points is not None and target not in self.virtual:
                msg = (f"'{target}' is not a declared virtual point; declare it under "
                       f"virtual_points: (name: ...) and set 'virtual.<name>'"
                       f"{suggest(str(target), self.virtual)}")  # fmt: skip
                reader.error(parsed.at("point"), join(apath, "point"), msg)
            return None if parsed.bad else SetAction(**_fields(parsed, "set"))
        cls = {"alarm": AlarmAction, "event": EventAction, "log": LogAction}[kind]
        if isinstance(value, ScalarNode):  # short form: `alarm: "text"`, `log: "text"`
            if kind == "alarm" and reader.is_null(value):
                return AlarmAction()
            message = reader.value(TABLES[kind].options[0], value, apath)
            if message is BAD:
                return None
            return cls(message)  # type: ignore[no-any-return]
        parsed = reader.section(value, apath, TABLES[kind])
        if parsed is None or parsed.bad:
            return None
        return cls(**_fields(parsed, kind))  # type: ignore[no-any-return]

    def _check_write_target(self, reader: Reader, point: str, node: Node, path: str) -> None:
        path = join(path, "point")
        if self.points is None:
            return
        if point in self.virtual:
            reader.error(node, path, f"'{point}' is a virtual point; use a `set` action for it")
        elif point not in self.points:
            reader.error(node, path, f"unknown point '{point}'{suggest(point, self.points)}")
        elif self.points[point] is False:
            reader.error(node, path, f"point '{point}' is not writable (set writable: true on it)")

    def _rule_files(self, top: Parsed) -> list[RuleConfig | None]:
        if not top.ok("rule_files"):
            return []
        return read_rule_files(self, top.nodes.get("rule_files"))

    def _rule_file(self, reader: Reader, text: str) -> list[RuleConfig | None]:
        before = len(self.issues)
        root = reader.compose(text)
        if root is None or reader.is_null(root):
            return [None] if len(self.issues) > before else []
        if isinstance(root, SequenceNode):
            return [self._rule(reader, item, join("rules", i)) for i, item in enumerate(root.value)]
        parsed = reader.section(root, "", TABLES["rule_file"])
        if parsed is None:
            return [None]
        return self._rules(reader, parsed, "rules")

    # --- uplink ------------------------------------------------------------------------------

    def _uplink(self, top: Parsed) -> UplinkConfig | None:
        if not top.ok("uplink"):
            return None
        node = top.values["uplink"]
        if not isinstance(node, Node):  # absent or null: all defaults
            mark = top.at("uplink").start_mark
            node = MappingNode("tag:yaml.org,2002:map", [], mark, mark)
        parsed = self.main.section(node, "uplink", TABLES["uplink"])
        if parsed is None:
            return None
        values = parsed.values
        if parsed.ok("insecure", "server_key") and not (values["insecure"] or values["server_key"]):
            msg = (
                "required unless insecure: true (plaintext TCP must be chosen explicitly; "
                "create keys with `gateway keys`)"
            )
            self.main.error(parsed.at("server_key"), "uplink.server_key", msg)
        if (
            parsed.ok("insecure", "server_key", "key_dir")
            and values["server_key"]
            and not (values["insecure"] or values["key_dir"])
        ):
            msg = (
                "required unless insecure: true (the directory with this gateway's "
                "<id>.key_secret; create it with `gateway keys new`)"
            )
            self.main.error(parsed.at("key_dir"), "uplink.key_dir", msg)
        return None if parsed.bad else UplinkConfig(**_fields(parsed, "uplink"))
