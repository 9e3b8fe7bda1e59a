"""The option tables of the config file: one table per section, the single source of truth.

The loader (:mod:`gateway.config.loader`) validates against these tables and
:mod:`gateway.config.docs` renders the JSON Schema and ``docs/config.md`` from them. The checks
that a table cannot express (cross references, uniqueness) live in the loader's modules.
"""

from __future__ import annotations

from typing import Final

from gateway.config.assets import ASSET_TABLES
from gateway.config.models import MODEL_TABLES
from gateway.config.opcua import OPCUA_TABLES
from gateway.config.options import REQUIRED, Option, Section
from gateway.config.options import duration_option as _duration

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
        Option("rule_files", "rule_file_list",
               "More rule files, relative to this file. Each holds a list of rules or a "
               "mapping `{rules: [...]}`; their rules are checked like inline ones. An entry "
               "may also be `{include: FILE, params: {name: value}}` to use a rule pack "
               "(see rules/README.md): `${name}` in the pack is replaced by the value.", (),
               nullable=True),
        Option("virtual_points", "section_list",
               "Points computed by rules (`set` action), named `virtual.<name>`; rules read "
               "them like device points and they go upstream with the telemetry.", (),
               nullable=True, table="virtual_point"),
        Option("uplink", "section", "Store-and-forward uplink to the cloud receiver.", {},
               nullable=True, table="uplink", default_doc="all defaults"),
        Option("models", "section_list", "TFLite models run on windows of points; their "
               "outputs become points `<model>.<output>`. Needs the ML extra "
               "(`pip install 'edge-gateway[ml]'`).", (), nullable=True, table="model"),
        Option("assets", "section", "The information model: asset tree, identifiers, units "
               "(docs/information-model.md).", None, nullable=True, table="assets",
               default_doc="none"),
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
               "Samples kept per point in its ring buffer (16 bytes each, in shared blocks). "
               "A ring that a rule or model window needs longer is grown and mirrored (32 bytes "
               "per sample) so each such window is one contiguous view.", 128,
               minimum=2, maximum=1_000_000),
        Option("stall_periods", "integer",
               "A polled device that says online but delivers nothing from a poll group for "
               "this many of its periods (plus the time its requests may spend timing out) is "
               "stalled: its tasks are "
               "restarted and `driver_stalled:<device>` is raised while it lasts; 0 turns this off.", 5,
               minimum=0, maximum=10_000),
        Option("max_model_bytes", "integer",
               "Largest model file the cloud may send with `update_model` (bytes); larger ones "
               "are refused before they are hashed or written.", 32 << 20,
               minimum=1024, maximum=60 << 20),
        Option("tls_cert", "path", "PEM certificate (chain) of the status listener: with "
               "`tls_key` it serves HTTPS (docs/api.md).", None, nullable=True),
        Option("tls_key", "path", "PEM private key of `tls_cert`.", None, nullable=True),
        Option("api_open_read", "boolean", "Let the API's reads (GET) through without a "
               "login from every address, not only from loopback; actions always need an "
               "operator (docs/api.md).", False),
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
        Option("driver", "string", "Protocol driver: a built-in (`modbus_tcp`, `modbus_rtu`, "
               "`can`, `node`, `opcua`) or an installed third-party one (docs/drivers.md). `modbus_rtu`, "
               "`can`, `node`, `opcua` and third-party drivers take their settings from the section of "
               "the same name (`modbus_rtu`: `rtu`).", "modbus_tcp", format="identifier"),
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
        Option("max_in_flight", "integer",
               "Modbus TCP: read requests of a poll group sent together (pipelined) before "
               "the answers. 1 (one at a time) suits every device; more only a device that "
               "executes pipelined requests (many, and every TCP-to-RTU bridge, do not).", 1,
               minimum=1, maximum=32),
        _duration("reconnect_min", "First reconnect delay after a connection loss.", 0.5),
        _duration("reconnect_max", "Cap of the doubling reconnect delay; >= reconnect_min.", 30.0),
        Option("poll_groups", "duration_map",
               "Poll groups: name -> period. Points choose one with `poll`.", {"default": 1.0},
               min_items=1, minimum=0, exclusive_minimum=True),
        Option("points", "section_list", "The device's points.", (), nullable=True,
               table="point"),
        Option("rtu", "section", "Serial line and quirks of a `modbus_rtu` device (required "
               "for that driver).", None, nullable=True, table="rtu", default_doc="none"),
        Option("can", "section", "Bus settings of a `can` device (required for that driver).",
               None, nullable=True, table="can", default_doc="none"),
        Option("node", "section", "Transport of a `node` device (required for that driver).",
               None, nullable=True, table="node", default_doc="none"),
        Option("opcua", "section", "Session, security and subscriptions of an `opcua` device "
               "(required for that driver).", None, nullable=True, table="opcua",
               default_doc="none"),
    ),
)  # fmt: skip

_RTU = Section(
    "rtu",
    "devices[].rtu",
    "devices[].rtu",
    "Modbus RTU: the serial line (shared by every device on the same `port`, one request in "
    "flight), per-device retries and quirks. `transport: tcp` sends RTU frames over TCP to the "
    "device's `host`/`port` instead (serial servers).",
    (
        Option("port", "string", "Serial device, e.g. /dev/ttyUSB0 (ignored for transport tcp).",
               "/dev/ttyUSB0", min_length=1),
        Option("transport", "choice", "`serial` or `tcp` (RTU framing over a TCP socket).",
               "serial", choices=("serial", "tcp")),
        Option("baudrate", "integer", "Line speed in bit/s.", 9600, minimum=50,
               maximum=4_000_000),
        Option("bytesize", "integer", "Data bits per character.", 8, minimum=5, maximum=8),
        Option("parity", "choice", "Parity bit.", "none", choices=("none", "even", "odd")),
        Option("stopbits", "number", "Stop bits: 1, 1.5 or 2.", 1, minimum=1, maximum=2),
        Option("rs485", "boolean", "Let the kernel toggle RTS around each transmission "
               "(TIOCSRS485; adapters with automatic direction control need false).", False),
        Option("rts_level_for_tx", "boolean", "RTS level while transmitting (rs485 only).",
               True),
        _duration("rts_delay_before_tx", "RTS settle time before sending (rs485 only).", 0.0,
                  period=False),
        _duration("rts_delay_after_tx", "RTS hold time after sending (rs485 only).", 0.0,
                  period=False),
        Option("inter_frame", "duration", "Silence kept between frames; null: 3.5 characters "
               "at the baud rate, 1.75 ms above 19200 baud.", None, minimum=0, nullable=True),
        Option("retries", "integer", "Repeats of a request that timed out or failed its CRC, "
               "before the poll counts as failed.", 1, minimum=0, maximum=10),
        Option("address_base", "integer", "1: point addresses are 1-based as in the device's "
               "manual (register 1 is wire address 0).", 0, minimum=0, maximum=1),
        _duration("connect_delay", "Wait after opening the line before the first request "
                  "(devices that reset on DTR or need warm-up).", 0.0, period=False),
        Option("sniff", "boolean", "Passive mode: send nothing, decode the requests and "
               "responses of another master on the line into this device's points.", False),
    ),
)  # fmt: skip

_CAN = Section(
    "can",
    "devices[].can",
    "devices[].can",
    "CAN bus through python-can. Points name DBC signals (`signal: MESSAGE.SIGNAL`); with "
    "`j1939: true` messages match by PGN whatever the source address, multi-packet "
    "transfers (BAM, RTS/CTS) are reassembled and DM1 trouble codes become events.",
    (
        Option("interface", "choice", "python-can interface: `socketcan` on Linux targets, "
               "`virtual` for tests and simulation.", "socketcan",
               choices=("socketcan", "virtual")),
        Option("channel", "string", "CAN interface name, e.g. can0.", "can0", min_length=1),
        Option("bitrate", "integer", "Bus bit rate (informational for socketcan, which is "
               "configured with `ip link`).", 500000, minimum=10000, maximum=8_000_000),
        Option("dbc", "path", "DBC file with the messages and signals (relative: to the config "
               "file).", None, nullable=True),
        Option("j1939", "boolean", "Decode 29-bit ids as J1939 (PGN, source, priority).",
               False),
        Option("address", "integer", "This gateway's J1939 source address; RTS/CTS transfers "
               "to it are answered with CTS. null: listen only.", None, minimum=0,
               maximum=253, nullable=True),
        _duration("batch_delay", "Longest wait before received frames are decoded as one "
                  "batch.", 0.02),
        Option("batch_frames", "integer", "Frames that trigger a batch before batch_delay.",
               512, minimum=1, maximum=65536),
        _duration("stale_after", "No frame for this long: the device goes offline.", 5.0),
    ),
)  # fmt: skip

_NODE = Section(
    "node",
    "devices[].node",
    "devices[].node",
    "A MicroPython sensor node speaking the node frame protocol (docs/node-frame.md). Points "
    "name the node's reading channels (`channel:`). Nodes sharing a `listen` address or "
    "`port` share one socket or serial line.",
    (
        Option("transport", "choice", "`udp` or `uart`.", "udp", choices=("udp", "uart")),
        Option("listen", "string", "UDP host:port to receive on. The default takes frames from "
               "this host only; give the address of the interface the nodes reach (or "
               "0.0.0.0:47800 for all).", "127.0.0.1:47800", format="host_port"),
        Option("port", "string", "Serial device for transport uart.", "/dev/ttyAMA0",
               min_length=1),
        Option("baudrate", "integer", "UART speed in bit/s.", 115200, minimum=1200,
               maximum=4_000_000),
        Option("node_id", "integer", "The node's id (frames carry it).", minimum=0,
               maximum=65535),
        _duration("stale_after", "No frame for this long: the node goes offline.", 30.0),
        Option("key_file", "path", "File with the node's secret key in hex (made by `python -m "
               "gateway.drivers.node.keys new FILE`; not readable by others): every frame "
               "carries a MAC under it. Required unless `insecure: true`.", None,
               nullable=True),
        Option("insecure", "boolean", "Accept this node's frames without a MAC (format 1): "
               "anyone who reaches the socket or line can send as it. Must be set explicitly "
               "when no `key_file` is given.", False),
        Option("discovery", "boolean", "List node ids that are not configured (stats "
               "`discovered_nodes`, one INFO line each); their frames are still refused. "
               "Applies to the whole socket or line.", False),
    ),
)  # fmt: skip

_POINT = Section(
    "point",
    "devices[].points[]",
    "devices[].points[]",
    "One Modbus point. Engineering value = raw * scale + offset.",
    (
        Option("name", "string", "Point name, unique within the device.", format="identifier"),
        Option("address", "integer", "Register or coil address (0-based as on the wire unless "
               "the device sets `rtu.address_base: 1`); the value's last register must be "
               "<= 65535. Required for Modbus drivers.", None, minimum=0, maximum=65535,
               nullable=True, default_doc="required (Modbus)"),
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
        Option("unit", "string", "UCUM unit (`Cel`, `mm/s`, `m3/h`, `kW`, `bar`, `L/min`; "
               "aliases such as `degC` are accepted), announced upstream as its UCUM code.", ""),
        Option("range", "range", "Measuring range `[low, high]` (information model).", None,
               nullable=True),
        Option("deadband", "number", "Only changes larger than this go upstream; null: every "
               "sample.", None, minimum=0, nullable=True),
        Option("poll", "string", "Poll group of the device that reads this point.", "default",
               format="identifier"),
        Option("writable", "boolean", "Rules and the cloud may write it (holding/coil only).",
               False),
        Option("description", "string", "Free text, announced upstream.", ""),
        Option("signal", "string", "`can` driver: the DBC signal, `MESSAGE.SIGNAL`.", None,
               min_length=1, nullable=True),
        Option("channel", "integer", "`node` driver: the node's reading channel.", None,
               minimum=0, maximum=255, nullable=True),
        Option("node", "string", "`opcua` driver: the variable's NodeId, e.g. "
               "`ns=2;s=Press.Temperature` or `ns=3;i=1001`.", None, min_length=1,
               nullable=True),
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
        Option("hysteresis", "number", "Clear band for a `when` of the form `x > limit` "
               "(or `>=`, `<`, `<=`): the rule clears at `x < limit - hysteresis` (resp. "
               "`x > limit + hysteresis`). Not together with `clear`.", None, minimum=0,
               nullable=True),
        _duration("clear_for", "How long the clear condition must hold before the rule "
                  "clears.", 0.0, period=False),
        _duration("cooldown", "After firing, the rule does not fire again for this long "
                  "(it fires when the condition still holds once the cooldown is over).", 0.0,
                  period=False),
        Option("repeat", "section", "Fire only when the condition came true `count` times "
               "within `within` (each episode after `for`); null: every episode fires.", None,
               nullable=True, table="repeat"),
        Option("severity", "choice", "Alarm severity.", "warning",
               choices=("info", "warning", "minor", "major", "critical")),
        Option("enabled", "boolean", "Disabled rules are checked but never evaluated.", True),
        Option("actions", "actions", "What to do when the rule fires; at least one.",
               min_items=1),
    ),
)  # fmt: skip

_REPEAT = Section(
    "repeat",
    "rules[].repeat",
    "rules[].repeat",
    "Repeat-within: fire on the `count`-th episode inside a sliding `within` window.",
    (
        Option("count", "integer", "Episodes needed.", minimum=1, maximum=10000),
        _duration("within", "Sliding window the episodes must fall in.", REQUIRED),
    ),
)

_VIRTUAL_POINT = Section(
    "virtual_point",
    "virtual_points[]",
    "virtual_points[]",
    "A point whose value a rule sets; its full name is `virtual.<name>`.",
    (
        Option("name", "string", "Name; unique.", format="identifier"),
        Option("unit", "string", "Engineering unit, announced upstream.", ""),
        Option("description", "string", "Free text, announced upstream.", ""),
    ),
)

_INCLUDE = Section(
    "include",
    "rule_files[]",
    "rule_files[] (rule packs)",
    "A rule pack and its parameters. The pack declares `params:` (name: default, null = "
    "required) next to its `rules:`.",
    (
        Option("include", "path", "The pack file (relative: to this file)."),
        Option(
            "params",
            "params",
            "Parameter values: name -> number, string or boolean.",
            {},
            nullable=True,
            default_doc="the pack's defaults",
        ),
    ),
)

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
        _duration("min_interval", "Rate limit: writes to the same point (by any rule) closer "
                  "together than this are refused and logged.", 1.0, period=False),
    ),
)  # fmt: skip

_EVENT = Section(
    "event",
    "rules[].actions[].event",
    "Action `event`",
    "Send an event upstream on the priority stream when the rule fires. Short form: "
    '`event: "message"`.',
    (Option("message", "string", "Message template.", min_length=1),),
)

_SET = Section(
    "set",
    "rules[].actions[].set",
    "Action `set`",
    "Set a virtual point (declared under `virtual_points`) to an expression's value.",
    (
        Option("point", "string", "Target `virtual.<name>`.", format="point_ref"),
        Option("value", "value", "Expression or number."),
    ),
)

_LOG = Section(
    "log",
    "rules[].actions[].log",
    "Action `log`",
    'Write a log line. Short form: `log: "message"`.',
    (
        Option("message", "string", "Message template.", min_length=1),
        Option("level", "choice", "Log level.", "info",
               choices=("debug", "info", "warning", "error")),
    ),
)  # fmt: skip

_RULE_FILE = Section(
    "rule_file",
    "(a rule file)",
    "Rule files",
    "A file named in `rule_files` holds a list of rules, or a mapping with this one key.",
    (
        Option("params", "params", "Rule packs: the parameters they take, name -> default "
               "(null: required). `${name}` anywhere in the file is replaced by the value.", {},
               nullable=True),
        Option("rules", "section_list", "The rules, as in the main file.", (), nullable=True,
               table="rule"),
        Option("units", "params", "Rule packs: unit-aware parameters. `point: mm/s` says the "
               "limits are written in mm/s for the point given as `point`; `limit: point` (a "
               "value) and `band: point delta` (a difference) follow it: converted when the "
               "point is in another unit of the quantity (m/s, in/s), refused when it measures "
               "something else. `${point_unit}` is the unit they end up in.", {},
               nullable=True),
    ),
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
        Option("buffer_bytes", "integer", "Memory between the drivers and the queue file: "
               "payload bytes waiting for their commit. When the disk cannot keep up, new "
               "telemetry is dropped at the source (counted per device in "
               "`gateway_samples_dropped_total`, announced upstream as a `backpressure` gap): "
               "memory is bounded by this, never by the load.", 8 * 1024 * 1024, minimum=4096),
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
    _ROOT, _GATEWAY, _DEVICE, _RTU, _CAN, _NODE, _POINT, _RULE, _REPEAT, _ALARM, _EVENT, _WRITE,
    _SET, _LOG, _RULE_FILE, _INCLUDE, _VIRTUAL_POINT, _UPLINK,
    *MODEL_TABLES, *OPCUA_TABLES, *ASSET_TABLES,
)  # fmt: skip
TABLES: Final[dict[str, Section]] = {section.name: section for section in SECTIONS}
#: Action kinds a rule may use; each is a one-key mapping `{kind: ...}`.
ACTIONS: Final[tuple[str, ...]] = ("alarm", "event", "write", "set", "log")
#: Number of 16-bit registers each type occupies (bool: one coil / discrete input).
REGISTER_WORDS: Final[dict[str, int]] = {
    "bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4,
}  # fmt: skip
