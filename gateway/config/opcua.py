"""The ``opcua:`` section of an OPC UA device: dataclasses, option tables and the cross checks.

The tables (``opcua``, ``opcua_group``) are listed in :mod:`gateway.config.schema` with every
other table; :func:`read_opcua` turns a parsed section into :class:`OpcuaConfig` and checks what a
table cannot express: a security policy and mode that go together, ``insecure`` exactly when the
policy is None, a server certificate (pinned or a trust directory) for the secure policies, a
username with its password file, per-group settings only for poll groups that exist.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from yaml.nodes import Node

from gateway.config.input import file_problem
from gateway.config.options import Option, Section
from gateway.config.options import duration_option as _duration
from gateway.config.reader import Parsed, Reader, join, suggest

if TYPE_CHECKING:
    from gateway.config.model import DeviceConfig

POLICIES: Final = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep")
MODES: Final = ("None", "Sign", "SignAndEncrypt")
#: A NodeId in its string form: ns=<index>; or nsu=<uri>; then i=, s=, g= or b=.
_NODE_ID = re.compile(
    r"^(?:(?:ns=\d+|nsu=[^;]+);)?(?:i=\d+|s=.+|g=[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}|b=.+)$",
    re.S,
)


def node_problem(text: str) -> str | None:
    """Why ``text`` is not a NodeId string, or None."""
    if _NODE_ID.match(text):
        return None
    return (f"{text!r} is not a NodeId; write ns=<namespace index>;s=<name> (or i=<number>, "
            "g=<guid>, b=<base64>), e.g. ns=2;s=Press.Temperature")  # fmt: skip


#: Where the gateway's own application certificate lives, under ``gateway.data_dir``.
CERT_SUBDIR: Final = "opcua"


@dataclass(frozen=True)
class OpcuaGroupConfig:
    """Monitored-item settings of one poll group; None inherits the device's ``opcua:`` value."""

    name: str
    sampling_interval: float | None = None
    queue_size: int | None = None
    deadband: Literal["none", "absolute", "percent"] | None = None
    deadband_value: float | None = None


@dataclass(frozen=True)
class OpcuaConfig:
    """Session, security and subscription settings of an OPC UA device (gateway/drivers/opcua)."""

    endpoint: str
    mode: Literal["subscribe", "poll"] = "subscribe"
    security_policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    insecure: bool = False
    server_certificate: str | None = None  # pinned DER/PEM certificate of the server
    trust_dir: str | None = None  # or: a directory of trusted server certificates
    certificate_dir: str | None = None  # our application certificate; None: <data_dir>/opcua
    username: str | None = None
    password_file: str | None = None
    sampling_interval: float | None = None  # None: the group's period
    queue_size: int = 10
    deadband: Literal["none", "absolute", "percent"] = "none"
    deadband_value: float = 0.0
    keepalive_count: int = 10
    lifetime: float = 60.0  # s the server keeps our session and subscriptions without us
    publish_requests: int = 3
    events: tuple[str, ...] = ()  # NodeIds whose events / alarms go to the events stream
    groups: tuple[OpcuaGroupConfig, ...] = ()

    def group(self, name: str) -> OpcuaGroupConfig:
        """The settings of poll group ``name``, inherited values filled in."""
        own = next((g for g in self.groups if g.name == name), OpcuaGroupConfig(name))
        return OpcuaGroupConfig(
            name,
            own.sampling_interval if own.sampling_interval is not None else self.sampling_interval,
            own.queue_size if own.queue_size is not None else self.queue_size,
            own.deadband if own.deadband is not None else self.deadband,
            own.deadband_value if own.deadband_value is not None else self.deadband_value,
        )


_DEADBAND_DOC = ("Data change filter of the monitored items: `none`, `absolute` (changes "
                 "smaller than `deadband_value` are not reported) or `percent` (of the "
                 "variable's EURange).")  # fmt: skip

_OPCUA = Section(
    "opcua",
    "devices[].opcua",
    "devices[].opcua",
    "OPC UA client session (asyncua). Points name their variable with `node:` (a NodeId such "
    "as `ns=2;s=Press.Temperature`). `subscribe` makes one subscription per poll group "
    "(publishing interval = the group's period); `poll` reads every group's nodes each period.",
    (
        Option("endpoint", "string", "Server endpoint URL, `opc.tcp://host:port[/path]`.",
               min_length=1),
        Option("mode", "choice", "`subscribe` (monitored items) or `poll` (Read per poll "
               "group, for servers with weak subscription support).", "subscribe",
               choices=("subscribe", "poll")),
        Option("security_policy", "choice", "SecurityPolicy of the channel.", "None",
               choices=POLICIES),
        Option("security_mode", "choice", "MessageSecurityMode: `Sign` or `SignAndEncrypt` "
               "with a secure policy, `None` with policy None.", "None", choices=MODES),
        Option("insecure", "boolean", "Required with policy None (no signature, no "
               "encryption): the choice must be explicit; the gateway logs a warning at "
               "start.", False),
        Option("server_certificate", "path", "The server's certificate (DER or PEM), pinned: "
               "any other certificate is refused.", None, nullable=True),
        Option("trust_dir", "path", "Or: a directory of trusted server certificates (DER or "
               "PEM).", None, nullable=True),
        Option("certificate_dir", "path", "Directory of the gateway's own application "
               "certificate (`cert.der`, `key.pem`), made by `gateway keys opcua --data-dir "
               "DIR`.", None, nullable=True, default_doc="`<gateway.data_dir>/opcua`"),
        Option("username", "string", "User identity; null: anonymous.", None, min_length=1,
               nullable=True),
        Option("password_file", "path", "File holding the user's password (first line; keep "
               "it mode 0600). Required with `username`.", None, nullable=True),
        Option("sampling_interval", "duration", "How often the server samples each variable; "
               "null: the poll group's period.", None, minimum=0, nullable=True,
               default_doc="the group's period"),
        Option("queue_size", "integer", "Values each monitored item queues between two "
               "publishes (and while the gateway is disconnected): changes beyond it are lost "
               "on the server.", 10, minimum=1, maximum=100_000),
        Option("deadband", "choice", _DEADBAND_DOC, "none",
               choices=("none", "absolute", "percent")),
        Option("deadband_value", "number", "The deadband: an absolute value, or percent "
               "(0..100).", 0.0, minimum=0),
        Option("keepalive_count", "integer", "Publishing intervals without data after which "
               "the server sends a keep-alive; three missed keep-alives count as a lost "
               "connection.", 10, minimum=1, maximum=10_000),
        _duration("lifetime", "How long the server keeps the session and subscriptions while "
                  "the gateway is away: the longest outage recovered without a gap.", 60.0),
        Option("publish_requests", "integer", "PublishRequests kept in flight per session.",
               3, minimum=1, maximum=32),
        Option("events", "string_list", "NodeIds whose events (and Alarms & Conditions) go "
               "to the events stream, e.g. `i=2253` (the Server object, which most servers "
               "report every event through). Needs `mode: subscribe`.", (), nullable=True),
        Option("groups", "section_list", "Per poll group overrides of `sampling_interval`, "
               "`queue_size`, `deadband`, `deadband_value`.", (), nullable=True,
               table="opcua_group"),
    ),
)  # fmt: skip

_OPCUA_GROUP = Section(
    "opcua_group",
    "devices[].opcua.groups[]",
    "devices[].opcua.groups[]",
    "Monitored-item settings of one poll group; a null or absent key inherits the `opcua:` "
    "value.",
    (
        Option("name", "string", "The poll group (a key of the device's `poll_groups`).",
               format="identifier"),
        Option("sampling_interval", "duration", "Sampling interval.", None, minimum=0,
               nullable=True),
        Option("queue_size", "integer", "Queue size.", None, minimum=1, maximum=100_000,
               nullable=True),
        Option("deadband", "choice", _DEADBAND_DOC, None,
               choices=("none", "absolute", "percent"), nullable=True),
        Option("deadband_value", "number", "Deadband.", None, minimum=0, nullable=True),
    ),
)  # fmt: skip

#: The tables of the ``opcua:`` section, in document order.
OPCUA_TABLES: Final[tuple[Section, ...]] = (_OPCUA, _OPCUA_GROUP)


def read_opcua(
    reader: Reader, node: Node, path: str, poll_groups: dict[str, float] | None
) -> OpcuaConfig | None:
    """Read one ``opcua:`` section; issues go to ``reader``, None when there are any."""
    sub = reader.section(node, path, _OPCUA)
    if sub is None or sub.bad:
        return None
    ok = _security(reader, sub, path)
    groups: list[OpcuaGroupConfig] = []
    seen: set[str] = set()
    items = sub.values.get("groups")
    for i, item in enumerate(items.value if isinstance(items, Node) else ()):
        gpath = join(path, "groups", i)
        g = reader.section(item, gpath, _OPCUA_GROUP)
        if g is None or g.bad:
            ok = False
            continue
        name = g.values["name"]
        if poll_groups is not None and name not in poll_groups:
            known = ", ".join(poll_groups)
            msg = (
                f"unknown poll group '{name}'{suggest(name, poll_groups)}; the device has: {known}"
            )
            reader.error(g.at("name"), join(gpath, "name"), msg)
            ok = False
        elif name in seen:
            reader.error(g.at("name"), join(gpath, "name"), f"poll group '{name}' given twice")
            ok = False
        seen.add(name)
        if not _deadband(reader, g, gpath):
            ok = False
        groups.append(OpcuaGroupConfig(**g.fields()))
    if not _deadband(reader, sub, path):
        ok = False
    if sub.values["events"] and sub.values["mode"] == "poll":
        msg = "events come by subscription; remove `events` or use mode: subscribe"
        reader.error(sub.at("events"), join(path, "events"), msg)
        ok = False
    if not ok:
        return None
    fields = {**sub.fields(), "events": tuple(sub.values["events"] or ())}
    return OpcuaConfig(**fields, groups=tuple(groups))


def _deadband(reader: Reader, parsed: Parsed, path: str) -> bool:
    kind, value = parsed.values.get("deadband"), parsed.values.get("deadband_value")
    if kind == "percent" and value is not None and value > 100:
        msg = f"a percent deadband is 0..100; got {value:g}"
        reader.error(parsed.at("deadband_value"), join(path, "deadband_value"), msg)
        return False
    return True


def _security(reader: Reader, sub: Parsed, path: str) -> bool:
    v, error = sub.values, reader.error
    policy, mode = v["security_policy"], v["security_mode"]
    if not v["endpoint"].startswith("opc.tcp://"):
        msg = f"an OPC UA endpoint starts with opc.tcp://; got {v['endpoint']!r}"
        error(sub.at("endpoint"), join(path, "endpoint"), msg)
        return False
    if (policy == "None") != (mode == "None"):
        msg = (f"security_mode {mode} does not go with security_policy {policy}: policy None "
               "takes mode None, the others Sign or SignAndEncrypt")  # fmt: skip
        error(sub.at("security_mode"), join(path, "security_mode"), msg)
        return False
    if policy == "None" and not v["insecure"]:
        msg = ("security_policy None sends everything unsigned and in clear text; set "
               "`insecure: true` to choose that explicitly, or use Basic256Sha256 or "
               "Aes128_Sha256_RsaOaep")  # fmt: skip
        error(sub.at("insecure"), join(path, "insecure"), msg)
        return False
    if policy != "None" and v["insecure"]:
        msg = f"security_policy {policy} is not insecure; remove `insecure: true`"
        error(sub.at("insecure"), join(path, "insecure"), msg)
        return False
    pinned, trust = v["server_certificate"], v["trust_dir"]
    if pinned is not None and trust is not None:
        msg = "give the server's certificate pinned (server_certificate) or a trust_dir, not both"
        error(sub.at("trust_dir"), join(path, "trust_dir"), msg)
        return False
    if policy != "None" and pinned is None and trust is None:
        msg = (f"security_policy {policy} needs the server's certificate: server_certificate "
               "(pinned) or trust_dir (a directory of trusted certificates)")  # fmt: skip
        error(sub.node, join(path, "server_certificate"), msg)
        return False
    if pinned is not None and (problem := file_problem(pinned, "server certificate")):
        error(sub.at("server_certificate"), join(path, "server_certificate"), problem)
        return False
    if trust is not None and not os.path.isdir(trust):
        msg = f"trust directory not found: {trust}"
        error(sub.at("trust_dir"), join(path, "trust_dir"), msg)
        return False
    user, pw = v["username"], v["password_file"]
    if (user is None) != (pw is None):
        key = "password_file" if user is not None else "username"
        msg = "username and password_file go together (neither: anonymous)"
        error(sub.at(key), join(path, key), msg)
        return False
    if pw is not None and (problem := file_problem(pw, "password file")):
        error(sub.at("password_file"), join(path, "password_file"), problem)
        return False
    return True


def with_certificate_dir(config: OpcuaConfig, data_dir: str) -> OpcuaConfig:
    """``certificate_dir`` defaulted to ``<data_dir>/opcua``."""
    if config.certificate_dir is not None:
        return config
    return dataclasses.replace(config, certificate_dir=os.path.join(data_dir, CERT_SUBDIR))


#: The files of the gateway's application certificate inside ``certificate_dir``.
CERT_FILE: Final = "cert.der"
KEY_FILE: Final = "key.pem"


def resolve_certificate_dirs(
    reader: Reader,
    devices: list[DeviceConfig | None],
    data_dir: str,
    marks: dict[str, tuple[int, int, str]],
) -> list[DeviceConfig | None]:
    """Each OPC UA device's ``certificate_dir`` defaulted under ``data_dir``; a secure policy
    without the gateway's certificate there is an issue naming the command that makes it."""
    from gateway.config.errors import ConfigIssue

    out: list[DeviceConfig | None] = []
    for dev in devices:
        if dev is not None and dev.opcua is not None:
            opcua = with_certificate_dir(dev.opcua, data_dir)
            dev = dataclasses.replace(dev, opcua=opcua)
            cert_dir = opcua.certificate_dir or ""
            missing = [
                f for f in (CERT_FILE, KEY_FILE) if not os.path.isfile(os.path.join(cert_dir, f))
            ]
            if opcua.security_policy != "None" and missing:
                line, column, path = marks.get(dev.name, (0, 0, ""))
                msg = (f"security_policy {opcua.security_policy} needs the gateway's application "
                       f"certificate, and {os.path.join(cert_dir, missing[0])} is missing; create "
                       f"it with `gateway keys opcua --data-dir {data_dir}`")  # fmt: skip
                reader.issues.append(ConfigIssue(reader.file, line, column, path, msg))
        out.append(dev)
    return out
