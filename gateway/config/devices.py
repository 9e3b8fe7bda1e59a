"""Devices and their points: the checks of the ``devices:`` section a table cannot express.

Unique names, one set of settings per shared serial line or node socket, the driver's own
settings section, the key each driver finds a point by, and register ranges that fit.
"""

from __future__ import annotations

from typing import Any

from yaml.nodes import MappingNode, Node

from gateway.config.assets import unit_issue
from gateway.config.errors import ConfigIssue
from gateway.config.input import file_problem
from gateway.config.model import CanConfig, DeviceConfig, NodeConfig, PointConfig, RtuConfig
from gateway.config.opcua import OpcuaConfig, node_problem, read_opcua
from gateway.config.options import Option, Section
from gateway.config.reader import Parsed, Reader, join, suggest
from gateway.config.schema import REGISTER_WORDS, TABLES

_READ_ONLY_TABLES = ("input", "discrete")
#: The built-in drivers and the key their points are found by; every other driver is a plugin
#: (gateway.drivers.registry) that declares its section and point key itself.
_POINT_KEY = {
    "modbus_tcp": "address",
    "modbus_rtu": "address",
    "can": "signal",
    "node": "channel",
    "opcua": "node",
}
_FAILED = object()  # a plugin's settings had issues (None is a valid "no settings")
_BIT_TABLES = ("coil", "discrete")


def line_of(node: Node) -> int:
    """1-based line of a node, for "first at line N" messages."""
    return int(node.start_mark.line) + 1


class DeviceReading:
    """The device part of a load (mixed into :class:`gateway.config.loader.Loader`)."""

    main: Reader
    issues: list[ConfigIssue]
    # full point name -> writable (None when its `writable` value was itself wrong);
    # None for a standalone rule file (no devices to check targets against)
    points: dict[str, bool | None] | None
    marks: dict[str, tuple[int, int, str]]  # device name -> (line, column, path) of its driver
    point_nodes: dict[str, tuple[Node, str]]  # full point name -> (name node, its key path)

    def _devices(self, top: Parsed) -> list[DeviceConfig | None]:
        node = top.values.get("devices")
        if not isinstance(node, Node):
            return []
        first: dict[str, int] = {}
        devices: list[DeviceConfig | None] = []
        for i, item in enumerate(node.value):
            path = join("devices", i)
            parsed = self.main.section(item, path, _device_table(item))
            if parsed is None:
                devices.append(None)
                continue
            name = parsed.values["name"] if parsed.ok("name") else None
            if name is not None and name in first:
                msg = f"duplicate device name '{name}' (first at line {first[name]})"
                self.main.error(parsed.at("name"), join(path, "name"), msg)
                name = None
            elif name is not None:
                first[name] = line_of(parsed.at("name"))
                mark = parsed.at("driver").start_mark
                self.marks[name] = (mark.line + 1, mark.column + 1, join(path, "driver"))
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
        if parsed.ok("driver"):
            from gateway.drivers.registry import available, unknown

            if values["driver"] not in available():
                msg = unknown(values["driver"])
                self.main.error(parsed.at("driver"), join(path, "driver"), msg)
                parsed.bad.add("driver")
        if parsed.ok("reconnect_min", "reconnect_max"):
            if values["reconnect_max"] < values["reconnect_min"]:
                msg = f"must be >= reconnect_min ({values['reconnect_min']:g} s)"
                self.main.error(parsed.at("reconnect_max"), join(path, "reconnect_max"), msg)
        groups = values["poll_groups"] if parsed.ok("poll_groups") else None
        points: list[PointConfig | None] = []
        node = values.get("points")
        seen: dict[str, int] = {}
        read: list[Parsed] = []
        for i, item in enumerate(node.value if isinstance(node, Node) else ()):
            point = self.main.section(item, join(path, "points", i), TABLES["point"])
            if point is not None and parsed.ok("driver"):
                self._point_target(point, values["driver"])
            points.append(None if point is None else self._point(point, name, groups, seen))
            if point is not None:
                read.append(point)
        driver = values["driver"] if parsed.ok("driver") else None
        if driver in ("modbus_tcp", "modbus_rtu"):
            self._overlaps(read)
        settings = self._driver_settings(parsed, path, driver)
        can = settings.get("can") if settings else None
        if can is not None and can.dbc is None and node is not None and node.value:
            msg = "the points of a CAN device name DBC signals; set dbc: to the DBC file"
            self.main.error(parsed.at("can"), join(path, "can", "dbc"), msg)
            return None
        if can is not None and can.dbc is not None and (problem := file_problem(can.dbc, "DBC")):
            self.main.error(parsed.at("can"), join(path, "can", "dbc"), problem)
            return None
        if None in points or parsed.bad or settings is None:
            return None
        return DeviceConfig(
            **parsed.fields(),
            points=tuple(p for p in points if p is not None),
            **settings,
        )

    def _driver_settings(
        self, parsed: Parsed, path: str, driver: str | None
    ) -> dict[str, Any] | None:
        """The rtu/can/node/opcua section the driver needs; the others must be absent."""
        out: dict[str, Any] = {}
        ok = True
        sections = (("rtu", RtuConfig), ("can", CanConfig), ("node", NodeConfig),
                    ("opcua", OpcuaConfig))  # fmt: skip
        for key, cls in sections:
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
            if key == "opcua":
                groups = parsed.values["poll_groups"] if parsed.ok("poll_groups") else None
                opcua = read_opcua(self.main, node, join(path, key), groups)
                ok = ok and opcua is not None
                out[key] = opcua
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
            out[key] = cls(**sub.fields())
        if driver is not None and driver not in _POINT_KEY:
            settings = self._plugin_settings(parsed, path, driver)
            ok = ok and settings is not _FAILED
            out["settings"] = settings
        return out if ok else None

    def _plugin_settings(self, parsed: Parsed, path: str, driver: str) -> Any:
        """A third-party driver's ``<driver>:`` section, read against its ``config_section`` and
        checked by its ``parse_config`` (issues reported at their file:line:column)."""
        from gateway.drivers.registry import DriverError, load

        try:
            cls = load(driver)
        except DriverError as exc:
            self.main.error(parsed.at("driver"), join(path, "driver"), str(exc))
            return _FAILED
        section, where = getattr(cls, "config_section", None), join(path, driver)
        node = parsed.values.get(driver)
        if driver in parsed.bad:
            return _FAILED
        if section is None:
            if node is None:
                return None
            msg = f"driver {driver} takes no `{driver}:` section; remove it"
            self.main.error(parsed.at(driver), where, msg)
            return _FAILED
        if node is None:  # its keys may all have defaults; missing ones are reported here
            mark = parsed.node.start_mark
            node = MappingNode("tag:yaml.org,2002:map", [], mark, mark)
        sub = self.main.section(node, where, section)
        if sub is None or sub.bad:
            return _FAILED
        before = len(self.main.issues)
        try:
            settings = cls.parse_config(sub, self.main.error)
        except Exception as exc:  # a plugin's bug must read as a config issue, not a traceback
            msg = f"driver {driver} failed to check its settings: {type(exc).__name__}: {exc}"
            self.main.error(sub.node, where, msg)
            return _FAILED
        return _FAILED if settings is None or len(self.main.issues) > before else settings

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
        need = _POINT_KEY.get(driver) or _plugin_point_key(driver)
        if need is None or need in parsed.bad:
            return
        if parsed.values.get(need) is None:
            msg = f"missing required key '{need}'"
            if need != "address":
                msg += f" (points of driver {driver} need it)"
            self.main.error(parsed.node, join(parsed.path, need), msg)
            parsed.bad.add(need)
        elif driver == "opcua" and (problem := node_problem(parsed.values[need])):
            self.main.error(parsed.at(need), join(parsed.path, need), problem)
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
                seen[name] = line_of(parsed.at("name"))
                if device is not None:
                    self.point_nodes[f"{device}.{name}"] = (parsed.at("name"), join(path, "name"))
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
        if parsed.ok("unit") and values["unit"]:
            code, problem = unit_issue(values["unit"])
            if problem:
                error(parsed.at("unit"), join(path, "unit"), problem)
                parsed.bad.add("unit")
            else:
                values["unit"] = code  # the UCUM code (`degC` -> `Cel`)
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
        return None if parsed.bad else PointConfig(**parsed.fields())

    def _overlaps(self, points: list[Parsed]) -> None:
        """Warn when two points of one device read the same registers of one table: valid (one
        register read two ways) but usually a copied address or a forgotten 32-bit width."""
        spans = []
        for p in points:
            v = p.values
            if p.ok("address", "table", "type", "name") and v["address"] is not None:
                words = 1 if v["table"] in _BIT_TABLES else REGISTER_WORDS[v["type"]]
                spans.append((v["table"], v["address"], v["address"] + words, p))
        spans.sort(key=lambda span: (span[0], span[1]))
        for i, (table, start, end, first) in enumerate(spans):
            for table2, start2, end2, second in spans[i + 1 :]:
                if table2 != table or start2 >= end:
                    break
                a, b = first.values, second.values
                self.main.warn(second.at("address"), join(second.path, "address"),
                               f"'{b['name']}' ({b['type']}, {_span(start2, end2)}) overlaps "
                               f"'{a['name']}' ({a['type']}, {_span(start, end)}, line "
                               f"{line_of(first.node)}) in the {table} table; check the address "
                               "(32-bit types take 2 registers, float64 takes 4)")  # fmt: skip


def _device_table(item: Node) -> Section:
    """The device table; for a third-party driver, with its ``<driver>:`` key."""
    table = TABLES["device"]
    if not isinstance(item, MappingNode):
        return table
    driver = next((v.value for k, v in item.value if getattr(k, "value", None) == "driver"
                   and isinstance(v.value, str)), None)  # fmt: skip
    if driver is None or driver in _POINT_KEY or table.get(driver) is not None:
        return table
    # Also for a driver that is not installed: its section is not a second, misleading issue.
    doc = f"Settings of the third-party `{driver}` driver."
    extra = Option(driver, "section", doc, None, nullable=True, default_doc="none")
    return Section(table.name, table.where, table.title, table.doc, (*table.options, extra))


def _plugin_point_key(driver: str) -> str | None:
    """The point key a third-party driver finds its points by (``point_key``), if any."""
    from gateway.drivers.registry import DriverError, load

    try:
        return getattr(load(driver), "point_key", None)
    except DriverError:
        return None  # reported with the device's driver


def _span(start: int, end: int) -> str:
    return f"register {start}" if end == start + 1 else f"registers {start}..{end - 1}"
