"""Rule files and rule packs: the `rule_files:` entries of a config and standalone rule files.

An entry is a path (``rules/line3.yaml``) or a pack include::

    rule_files:
      - include: ../rules/iso10816.yaml
        params: {id: motor1, point: motor1.vibration, zone_bc: 4.5}

A pack is a rule file with a ``params:`` mapping (name -> default; ``null`` = required) beside its
``rules:``. Every ``${name}`` in the pack's text is replaced by the parameter's value before the
YAML is read, so the rules of a pack are checked exactly like hand-written ones and errors keep
the pack's line numbers. Values are scalars without newlines (numbers, point names, words).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.errors import ConfigIssue
from gateway.config.input import MAX_FILE_BYTES, MAX_TOTAL_BYTES, InputError, read_text
from gateway.config.model import (
    Action,
    AlarmAction,
    EventAction,
    LogAction,
    RuleConfig,
    SetAction,
    VirtualPointConfig,
    WriteAction,
)
from gateway.config.reader import BAD, Parsed, Reader, join, suggest
from gateway.config.schema import ACTIONS, TABLES

_PARAM = re.compile(r"\$\{([^}]*)\}")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _total_hint(message: str, read: int) -> str:
    if read >= MAX_TOTAL_BYTES - MAX_FILE_BYTES:
        return f"{message} (the config and its rule files together are limited to {MAX_TOTAL_BYTES} bytes)"
    return message


def _param_value(reader: Reader, node: Node, path: str) -> Any:
    if not isinstance(node, ScalarNode):
        reader.error(node, path, "expected a number, string or boolean")
        return BAD
    value = reader.scalar(node, path)
    if value is BAD:
        return BAD
    if isinstance(value, str) and ("\n" in value or "${" in value):
        reader.error(node, path, "a parameter value cannot contain a newline or '${'")
        return BAD
    return value


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def apply_params(
    reader: Reader,
    text: str,
    given: dict[str, tuple[Any, Node]],
    main: Reader,
    entry: Node,
    entry_path: str,
    point_units: dict[str, str] | None = None,
) -> str | None:
    """``text`` with every ``${name}`` replaced; None (issues recorded) when a param is wrong.

    ``point_units`` (point name -> UCUM unit) makes the pack's unit-aware parameters follow the
    points they are given (see :func:`_convert_units`); None (a standalone pack): as written.
    """
    before = len(reader.issues)
    declared: dict[str, Any] = {}
    units: dict[str, tuple[str, Node]] = {}
    root = reader.compose(text) if ("${" in text or "params" in text or given) else None
    if root is None and len(reader.issues) > before:
        return None
    if isinstance(root, MappingNode):
        for key, _, value_node in reader.pairs(root, ""):
            if key == "units" and isinstance(value_node, MappingNode):
                for name, _, spec in reader.pairs(value_node, "units"):
                    if isinstance(spec, ScalarNode):
                        units[name] = (str(spec.value), spec)
            if key != "params" or not isinstance(value_node, MappingNode):
                continue
            for name, name_node, default_node in reader.pairs(value_node, "params"):
                if not _IDENT.match(name):
                    reader.error(name_node, join("params", name), "expected an identifier")
                    continue
                default = _param_value(reader, default_node, join("params", name))
                declared[name] = default
    for name, (_, key_node) in given.items():
        if name not in declared:
            known = ", ".join(declared) or "none"
            main.error(
                key_node,
                join(entry_path, "params", name),
                f"unknown parameter '{name}'{suggest(name, declared)}; the pack takes: {known}",
            )
    values = {name: default for name, default in declared.items()}
    values.update({name: v for name, (v, _) in given.items()})
    if units:
        _convert_units(reader, main, units, values, declared, given, entry, entry_path, point_units)
    missing = [name for name, v in values.items() if v is None]
    if missing:
        main.error(
            entry,
            join(entry_path, "params"),
            f"missing required parameter(s): {', '.join(missing)}",
        )
    lines = text.splitlines(keepends=True)
    for lineno, line in enumerate(lines, 1):
        for m in _PARAM.finditer(line):
            if m.group(1) not in declared:
                hint = suggest(m.group(1), declared)
                reader.issues.append(
                    _issue(reader, lineno, m.start() + 1, f"unknown parameter '${{{m.group(1)}}}'"
                           f"{hint}; declare it under params:")
                )  # fmt: skip
    if len(reader.issues) > before or len(main.issues) > before:
        return None
    grown = sum(len(_render(values[m.group(1)])) - len(m.group(0)) for m in _PARAM.finditer(text))
    if len(text) + grown > MAX_FILE_BYTES:
        main.error(entry, join(entry_path, "params"),
                   f"the pack is {len(text) + grown} bytes after substituting its parameters; "
                   f"at most {MAX_FILE_BYTES} are read (shorter values, or fewer uses)")  # fmt: skip
        return None
    return _PARAM.sub(lambda m: _render(values[m.group(1)]), text)


def _convert_units(
    reader: Reader, main: Reader, units: dict[str, tuple[str, Node]], values: dict[str, Any],
    declared: dict[str, Any], given: dict[str, tuple[Any, Node]], entry: Node, entry_path: str,
    point_units: dict[str, str] | None,
) -> None:  # fmt: skip
    """A pack's ``units:``: ``point: mm/s`` says the limits are written in mm/s for the point
    given as ``point``; ``zone_ab: point`` (a limit) and ``band: point delta`` (a difference)
    follow it. When the point is in another unit of the same quantity (m/s, in/s) the limits
    are converted to it; a point of another quantity is refused. ``${point_unit}`` is the unit
    the limits end up in, for messages."""
    from gateway.model.units import UnitError, converter, normalize

    points: dict[str, str] = {}
    for name, (spec, node) in units.items():
        head = spec.split()[0] if spec.split() else ""
        if head in units and head != name:  # a value that follows a point's unit
            continue
        try:
            points[name] = normalize(spec)
        except UnitError as exc:
            reader.error(node, join("units", name), f"unknown unit: {exc}")
    for name, target in points.items():
        declared[f"{name}_unit"] = target
        point = values.get(name)
        actual = (point_units or {}).get(point, "") if isinstance(point, str) else ""
        values[f"{name}_unit"] = actual or target
        if not actual or actual == target:
            continue
        where = given[name][1] if name in given else entry
        try:
            scale, offset = converter(target, actual)
        except UnitError as exc:
            main.error(where, join(entry_path, "params", name),
                       f"{point} is in {actual}, but this pack's limits are in {target}: {exc}; "
                       f"give a point measured in {target} (or convertible to it)")  # fmt: skip
            continue
        for vname, (spec, node) in units.items():
            follows, *rest = spec.split()
            if follows != name or vname == name:
                continue
            value = values.get(vname)
            if isinstance(value, bool) or not isinstance(value, int | float):
                reader.error(node, join("units", vname), f"{vname} converts with {name}'s "
                             f"unit, so it must be a number; got {value!r}")  # fmt: skip
                continue
            values[vname] = round(value * scale + (0.0 if rest == ["delta"] else offset), 12)


def rule_positions(parsed: Parsed) -> tuple[tuple[str, int, int], ...]:
    """Where the one-line expressions and templates of a rule start, so the rule engine's errors
    point into the file: ``(label, line, column)`` with the engine's labels (``when``, ``clear``,
    ``log message``, ``write dev.point value``); a label used twice in the rule is left out."""
    found: list[tuple[str, Node | None]] = [
        (key, parsed.nodes.get(key)) for key in ("when", "clear")
    ]
    actions = parsed.nodes.get("actions")
    for item in actions.value if isinstance(actions, SequenceNode) else ():
        if not isinstance(item, MappingNode) or len(item.value) != 1:
            continue
        kind = str(item.value[0][0].value)
        fields = _scalar_fields(item.value[0][1])
        if kind in ("alarm", "event", "log"):
            found.append(
                (f"{kind} message", item.value[0][1] if not fields else fields.get("message"))
            )
        elif kind in ("write", "set") and "point" in fields:
            found.append((f"{kind} {fields['point'].value} value", fields.get("value")))
    labels = [label for label, _ in found]
    out = []
    for label, node in found:
        if isinstance(node, ScalarNode) and node.start_mark.line == node.end_mark.line:
            quoted = 1 if node.style in ("'", '"') else 0
            if node.style in (None, "", "'", '"') and labels.count(label) == 1:
                out.append((label, node.start_mark.line + 1, node.start_mark.column + 1 + quoted))
    return tuple(out)


def _scalar_fields(node: Node) -> dict[str, ScalarNode]:
    """The scalar values of a mapping node by key ({} for anything else)."""
    if not isinstance(node, MappingNode):
        return {}
    return {str(k.value): v for k, v in node.value if isinstance(v, ScalarNode)}


def _issue(reader: Reader, line: int, column: int, message: str) -> ConfigIssue:
    return ConfigIssue(reader.file, line, column, "", message)


class RuleReading:
    """The rule part of a load (mixed into :class:`gateway.config.loader.Loader`): inline rules,
    rule files and packs, actions and their targets, virtual points."""

    main: Reader
    base_dir: Path
    issues: list[ConfigIssue]
    files: list[str]  # shown names of the main file and every rule file, in reading order
    points: dict[str, bool | None] | None  # see DeviceReading.points
    virtual: set[str]  # declared "virtual.<name>" points
    rule_file_paths: list[str]
    rule_names: dict[str, str]  # name -> "file:line" of its first definition
    read_bytes: int  # of every file of this load, against input.MAX_TOTAL_BYTES
    warnings: list[ConfigIssue]
    clean_rules: list[RuleConfig]  # rules read without an issue (`gateway check` compiles them)

    def _rules(self, reader: Reader, parsed: Parsed, key: str) -> list[RuleConfig | None]:
        node = parsed.values.get(key)
        if not isinstance(node, Node):
            return []
        return [self._rule(reader, item, join("rules", i)) for i, item in enumerate(node.value)]

    def _rule(self, reader: Reader, node: Node, path: str) -> RuleConfig | None:
        before = len(self.issues)
        parsed = reader.section(node, path, TABLES["rule"])
        if parsed is None:
            return None
        source = f"{reader.file}:{node.start_mark.line + 1}"
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
        rule = RuleConfig(
            **parsed.fields(),
            actions=tuple(a for a in actions if a is not None),
            source=source,
            **extra,
        )
        if len(self.issues) == before:
            self.clean_rules.append(rule)
        return rule

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
            return None if parsed.bad else WriteAction(**parsed.fields())
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
            return None if parsed.bad else SetAction(**parsed.fields())
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
        return cls(**parsed.fields())  # type: ignore[no-any-return]

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

    point_units: dict[str, str]  # point name (or asset path name) -> UCUM unit

    def _rule_files(self, top: Parsed) -> list[RuleConfig | None]:
        if not top.ok("rule_files"):
            return []
        return self._read_rule_files(top.nodes.get("rule_files"))

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

    def _read_rule_files(self, node: Node | None) -> list[RuleConfig | None]:
        """Read every `rule_files` entry of the main file; issues go to ``self.issues``."""
        if not isinstance(node, SequenceNode):
            return []
        main = self.main
        rules: list[RuleConfig | None] = []
        listed: dict[tuple[Path, str], int] = {}
        for i, item in enumerate(node.value):
            path = join("rule_files", i)
            params: dict[str, tuple[Any, Node]] = {}
            if isinstance(item, MappingNode):
                parsed = main.section(item, path, TABLES["include"])
                if parsed is None or not parsed.ok("include", "params"):
                    continue
                written_node = parsed.at("include")
                resolved = parsed.values["include"]
                params_node = parsed.values["params"]
                if isinstance(params_node, MappingNode):
                    for key, key_node, value_node in main.pairs(params_node, join(path, "params")):
                        value = _param_value(main, value_node, join(path, "params", key))
                        if value is not BAD:
                            params[key] = (value, key_node)
            elif isinstance(item, ScalarNode) and not main.is_null(item):
                written_node = item
                resolved = os.path.normpath(self.base_dir / str(item.value))
            else:
                main.error(
                    item, path, "expected a path or a mapping {include: FILE, params: {...}}"
                )
                continue
            file = Path(resolved)
            seen_key = (file, repr(sorted((k, v[0]) for k, v in params.items())))
            if seen_key in listed:
                main.error(item, path, f"rule file listed twice (first at line {listed[seen_key]})")
                continue
            listed[seen_key] = item.start_mark.line + 1
            try:
                text = read_text(file, min(MAX_FILE_BYTES, MAX_TOTAL_BYTES - self.read_bytes),
                                 what="rule file")  # fmt: skip
            except FileNotFoundError:
                main.error(written_node, path, f"rule file not found: {file}")
                continue
            except InputError as exc:
                main.error(written_node, path, _total_hint(str(exc), self.read_bytes))
                continue
            self.read_bytes += len(text)
            written = str(written_node.value)
            shown = (
                written
                if Path(written).is_absolute()
                else os.path.normpath(os.path.join(os.path.dirname(main.file), written))
            )
            reader = Reader(shown, self.base_dir, self.issues, self.warnings)
            self.files.append(shown)
            self.rule_file_paths.append(str(file))
            substituted = apply_params(reader, text, params, main, item, path, self.point_units)
            if substituted is None:
                rules.append(None)
                continue
            self.read_bytes += len(substituted) - len(text)
            rules.extend(self._rule_file(reader, substituted))
        return rules

    def _read_virtual_points(self, top: Parsed) -> tuple[VirtualPointConfig, ...]:
        """The `virtual_points:` section; names go to ``self.virtual`` for `set` target checks."""
        node = top.values.get("virtual_points")
        out: list[VirtualPointConfig] = []
        for i, item in enumerate(node.value if isinstance(node, Node) else ()):
            path = join("virtual_points", i)
            parsed = self.main.section(item, path, TABLES["virtual_point"])
            if parsed is None or parsed.bad:
                continue
            full = f"virtual.{parsed.values['name']}"
            if full in self.virtual:
                self.main.error(parsed.at("name"), join(path, "name"), f"duplicate '{full}'")
                continue
            self.virtual.add(full)
            if parsed.values["unit"]:
                from gateway.config.assets import unit_issue

                code, problem = unit_issue(parsed.values["unit"])
                if problem:
                    self.main.error(parsed.at("unit"), join(path, "unit"), problem)
                    continue
                parsed.values["unit"] = code
            out.append(VirtualPointConfig(**parsed.fields()))
        return tuple(out)
