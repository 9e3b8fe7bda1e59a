"""The option tables of the config file: one table per section, the single source of truth.

Each option is declared once (key, type, default, constraints, description), Fluent Bit style.
The loader validates against these tables, :func:`json_schema` turns them into the JSON Schema
that editors use, and :func:`gateway.config_docs.markdown_reference` renders ``docs/config.md``
from them, so validation, editor hints and documentation cannot drift apart.
The YAML-facing checks that a table cannot express (cross references, uniqueness) live in
:mod:`gateway.config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

Kind = Literal[
    "string",  # a YAML string
    "integer",
    "number",  # int or float, finite
    "boolean",
    "duration",  # seconds: number or "500ms" / "2s" / "5m" / "1h"
    "choice",  # a string from `choices`
    "path",  # a string; relative paths are resolved against the config file's directory
    "path_list",
    "string_list",
    "duration_map",  # mapping identifier -> duration (poll groups)
    "section",  # a nested mapping described by another table
    "section_list",  # a list of such mappings
    "actions",  # a rule's action list (alarm | write | log)
    "value",  # a write value: number, string or boolean, kept as expression text
]


class _Required:
    """Marker for options without a default: the key must be present."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


@dataclass(frozen=True)
class Format:
    """A named string format: a regex (also emitted as JSON Schema ``pattern``) and its prose."""

    pattern: str
    hint: str
    ports: tuple[int, int] | None = None  # range of the ``:port`` suffix, checked beyond the regex

    def check(self, text: str) -> bool:
        """True if ``text`` matches the pattern and, if any, its port is in range."""
        if re.fullmatch(self.pattern, text) is None:
            return False
        if self.ports is not None:
            port = int(text.rsplit(":", 1)[1])
            return self.ports[0] <= port <= self.ports[1]
        return True


_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"

FORMATS: Final[dict[str, Format]] = {
    "identifier": Format(
        r"^[A-Za-z_][A-Za-z0-9_]*$", "an identifier: a letter or '_', then letters, digits, '_'"
    ),
    "gateway_id": Format(
        r"^[A-Za-z0-9_.-]{1,64}$",
        "1 to 64 letters, digits, '_', '-' or '.' (the id is part of ZeroMQ topics "
        "'<id>/<stream>', so no '/' and no spaces)",
    ),
    "rule_name": Format(
        r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        "a name: a letter or '_', then letters, digits, '_', '-' or '.'",
    ),
    "host": Format(r"^[^\s/]+$", "a host name or IP address"),
    "host_port": Format(
        rf"^{_HOST}:[0-9]{{1,5}}$", "host:port with port 0..65535, e.g. 127.0.0.1:9108", (0, 65535)
    ),
    "tcp_endpoint": Format(
        rf"^tcp://{_HOST}:[0-9]{{1,5}}$",
        "tcp://host:port with port 1..65535, e.g. tcp://cloud.example.com:7000",
        (1, 65535),
    ),
    "point_ref": Format(
        r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$", "a full point name 'device.point'"
    ),
}


@dataclass(frozen=True)
class Option:
    """One key of a config section.

    ``attr`` names the dataclass field when it differs from the YAML key (``for`` -> ``for_``).
    ``minimum``/``maximum`` bound numbers and durations; ``exclusive_minimum`` makes the lower
    bound strict (periods must be > 0). ``planned`` lists choices that are known but not yet
    implemented, so the error can say "comes later" instead of "unknown". ``nullable`` scalars
    accept ``null`` as None; nullable containers read ``null`` as empty.
    """

    key: str
    kind: Kind
    doc: str
    default: Any = REQUIRED
    attr: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    nonzero: bool = False
    min_length: int = 0
    min_items: int = 0
    choices: tuple[str, ...] = ()
    planned: tuple[str, ...] = ()
    format: str | None = None
    nullable: bool = False
    table: str | None = None
    default_doc: str | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def field(self) -> str:
        """The dataclass field this key fills."""
        return self.attr or self.key


@dataclass(frozen=True)
class Section:
    """A table of options and where it sits in the YAML document (for docs)."""

    name: str
    where: str
    title: str
    doc: str
    options: tuple[Option, ...]

    def get(self, key: str) -> Option | None:
        return next((opt for opt in self.options if opt.key == key), None)

    def keys(self) -> list[str]:
        return [opt.key for opt in self.options]


def _duration(
    key: str, doc: str, default: Any, *, period: bool = True, attr: str | None = None
) -> Option:
    """A duration option; periods must be strictly positive, other durations >= 0."""
    return Option(key, "duration", doc, default, attr=attr, minimum=0, exclusive_minimum=period)


_ROOT = Section(
    "root",
    "(top level)",
    "Top level",
    "The file is one YAML mapping with these sections.",
    (
        Option("gateway", "section", "Identity and local services of this gateway.", table="gateway"),
        Option("devices", "section_list", "Southbound devices and their points.", (),
               nullable=True, table="device"),
        Option("rules", "section_list", "IF-THEN rules evaluated on every sample.", (),
               nullable=True, table="rule"),
        Option("rule_files", "path_list",
               "More rule files, relative to this file. Each holds a list of rules or a "
               "mapping `{rules: [...]}`; their rules are checked like inline ones.", (),
               nullable=True),
        Option("uplink", "section", "Store-and-forward uplink to the cloud receiver.", {},
               nullable=True, table="uplink", default_doc="all defaults"),
    ),
)  # fmt: skip

_GATEWAY = Section(
    "gateway",
    "gateway",
    "gateway",
    "Identity and local services of this gateway.",
    (
        Option("id", "string", "Gateway id; names this gateway upstream and in topics.",
               format="gateway_id"),
        Option("data_dir", "path", "Directory for local state (relative: to the config file).",
               "var"),
        Option("metrics_listen", "string",
               "host:port of the local HTTP server for /metrics and /status; null turns it off.",
               "127.0.0.1:9108", format="host_port", nullable=True),
        Option("ring_capacity", "integer",
               "Samples kept per point in its ring buffer for windows (16 bytes each, twice: "
               "the ring is mirrored so every window is one contiguous view).", 128,
               minimum=2, maximum=1_000_000),
    ),
)  # fmt: skip

_DEVICE = Section(
    "device",
    "devices[]",
    "devices[]",
    "One southbound device. Its points are read in coalesced requests per poll group.",
    (
        Option("name", "string", "Device name; the first half of every point name "
               "`device.point`. Unique.", format="identifier"),
        Option("driver", "choice", "Protocol driver.", "modbus_tcp", choices=("modbus_tcp",),
               planned=("modbus_rtu", "can", "node")),
        Option("host", "string", "Host name or IP address of the Modbus TCP server.",
               "127.0.0.1", format="host"),
        Option("port", "integer", "TCP port.", 502, minimum=1, maximum=65535),
        Option("unit_id", "integer", "Modbus unit id (slave address).", 1, minimum=0,
               maximum=255),
        _duration("timeout", "Timeout of one request.", 1.0),
        Option("max_registers", "integer",
               "Most registers read in one request when coalescing reads.", 125,
               minimum=1, maximum=125),
        Option("max_gap", "integer",
               "Unused registers allowed between two points read in one request.", 8,
               minimum=0, maximum=125),
        _duration("reconnect_min", "First reconnect delay after a connection loss.", 0.5),
        _duration("reconnect_max", "Cap of the doubling reconnect delay; >= reconnect_min.", 30.0),
        Option("poll_groups", "duration_map",
               "Poll groups: name -> period. Points choose one with `poll`.", {"default": 1.0},
               min_items=1, minimum=0, exclusive_minimum=True),
        Option("points", "section_list", "The device's points.", (), nullable=True,
               table="point"),
    ),
)  # fmt: skip

_POINT = Section(
    "point",
    "devices[].points[]",
    "devices[].points[]",
    "One Modbus point. Engineering value = raw * scale + offset.",
    (
        Option("name", "string", "Point name, unique within the device.", format="identifier"),
        Option("address", "integer", "0-based register or coil address as on the wire; the "
               "value's last register must be <= 65535.", minimum=0, maximum=65535),
        Option("table", "choice", "Modbus table. `input` and `discrete` are read-only.",
               "holding", choices=("holding", "input", "coil", "discrete")),
        Option("type", "choice", "Register type. coil/discrete points are `bool`, and `bool` "
               "is only valid in them.", "uint16",
               choices=("bool", "int16", "uint16", "int32", "uint32", "float32", "float64"),
               default_doc="`bool` in coil/discrete, else `uint16`"),
        Option("word_order", "choice", "Order of the 16-bit words of 32/64-bit values.", "big",
               choices=("big", "little")),
        Option("byte_order", "choice", "Order of the two bytes inside each word.", "big",
               choices=("big", "little")),
        Option("scale", "number", "Multiplier applied to the raw value; not 0.", 1.0,
               nonzero=True),
        Option("offset", "number", "Added after scaling.", 0.0),
        Option("unit", "string", "Engineering unit, announced upstream.", ""),
        Option("deadband", "number", "Only changes larger than this go upstream; null: every "
               "sample.", None, minimum=0, nullable=True),
        Option("poll", "string", "Poll group of the device that reads this point.", "default",
               format="identifier"),
        Option("writable", "boolean", "Rules and the cloud may write it (holding/coil only).",
               False),
        Option("description", "string", "Free text, announced upstream.", ""),
    ),
)  # fmt: skip

_RULE = Section(
    "rule",
    "rules[]",
    "rules[]",
    "IF `when` holds (for `for` seconds) THEN run `actions`. Expressions are compiled and "
    "checked by the rule engine.",
    (
        Option("name", "string", "Rule name, unique across the config and its rule files.",
               format="rule_name"),
        Option("when", "string", "Condition expression, e.g. `press1.temp > 80`.",
               min_length=1),
        _duration("for", "How long the condition must hold before the rule fires.", 0.0,
                  period=False, attr="for_"),
        Option("clear", "string", "Clear condition (hysteresis); null: `not (when)`.", None,
               min_length=1, nullable=True),
        Option("severity", "choice", "Alarm severity.", "warning",
               choices=("info", "warning", "minor", "major", "critical")),
        Option("enabled", "boolean", "Disabled rules are checked but never evaluated.", True),
        Option("actions", "actions", "What to do when the rule fires; at least one.",
               min_items=1),
    ),
)  # fmt: skip

_ALARM = Section(
    "alarm",
    "rules[].actions[].alarm",
    "Action `alarm`",
    "Raise an alarm (raised once, cleared once). Short form: `alarm: \"message\"`.",
    (
        Option("message", "string", "Message template, e.g. `\"temp {press1.temp:.1f} degC\"`; "
               "empty: the rule name.", ""),
    ),
)  # fmt: skip

_WRITE = Section(
    "write",
    "rules[].actions[].write",
    "Action `write`",
    "Write a value to a device point (closed loop).",
    (
        Option("point", "string", "Target `device.point`; must exist and be writable.",
               format="point_ref"),
        Option("value", "value", "Expression or number to write; numbers are kept as their "
               "text (`0` -> \"0\"), booleans as \"1\"/\"0\"."),
    ),
)  # fmt: skip

_LOG = Section(
    "log",
    "rules[].actions[].log",
    "Action `log`",
    'Write a log line. Short form: `log: "message"`.',
    (Option("message", "string", "Message template.", min_length=1),),
)

_RULE_FILE = Section(
    "rule_file",
    "(a rule file)",
    "Rule files",
    "A file named in `rule_files` holds a list of rules, or a mapping with this one key.",
    (Option("rules", "section_list", "The rules, as in the main file.", (), nullable=True,
            table="rule"),),
)  # fmt: skip

_UPLINK = Section(
    "uplink",
    "uplink",
    "uplink",
    "Durable queue and ZeroMQ link to the cloud receiver.",
    (
        Option("endpoints", "string_list", "Cloud receiver endpoints, tried in order.",
               ("tcp://127.0.0.1:7000",), min_items=1, format="tcp_endpoint"),
        Option("queue", "path", "SQLite file of the durable queue (relative: to the config "
               "file).", "var/queue.db"),
        Option("batch_max_records", "integer", "Group commit: at most this many records ...",
               1000, minimum=1),
        _duration("batch_max_delay", "... or this long, whichever comes first.", 0.05),
        _duration("ack_timeout", "Time without an ACK before the link is reopened and "
                  "replayed.", 5.0),
        Option("max_in_flight", "integer", "Records sent but not yet acknowledged.", 10000,
               minimum=1),
        Option("insecure", "boolean", "Plaintext TCP. Must be set explicitly when no "
               "`server_key` is given.", False),
        Option("server_key", "path", "Cloud public key file (CurveZMQ).", None, nullable=True),
        Option("key_dir", "path", "Directory of this gateway's key pair "
               "(`<gateway.id>.key_secret`, made by `gateway keys new`).", None, nullable=True),
        Option("stream_max_bytes", "integer", "Per-stream quota: payload bytes one stream may "
               "hold in the queue file; null = no limit.", None, nullable=True, minimum=1),
        Option("quota_policy", "choice", "At the quota: `drop_oldest` deletes the oldest "
               "records (1/16 of the quota at a time); `block` refuses new records. Either way "
               "the drops are counted and announced upstream as a gap.", "drop_oldest",
               choices=("drop_oldest", "block")),
    ),
)  # fmt: skip

#: Every section, in document order.
SECTIONS: Final[tuple[Section, ...]] = (
    _ROOT, _GATEWAY, _DEVICE, _POINT, _RULE, _ALARM, _WRITE, _LOG, _RULE_FILE, _UPLINK,
)  # fmt: skip
TABLES: Final[dict[str, Section]] = {section.name: section for section in SECTIONS}
#: Action kinds a rule may use; each is a one-key mapping `{kind: ...}`.
ACTIONS: Final[tuple[str, ...]] = ("alarm", "write", "log")
#: Number of 16-bit registers each type occupies (bool: one coil / discrete input).
REGISTER_WORDS: Final[dict[str, int]] = {
    "bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4,
}  # fmt: skip
