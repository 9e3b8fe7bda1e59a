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
from typing import TYPE_CHECKING, Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config_input import MAX_FILE_BYTES, MAX_TOTAL_BYTES, InputError, read_text
from gateway.config_schema import TABLES
from gateway.config_yaml import BAD, Parsed, Reader, join, suggest

if TYPE_CHECKING:
    from gateway.config import RuleConfig, VirtualPointConfig

_PARAM = re.compile(r"\$\{([^}]*)\}")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def read_rule_files(loader: Any, node: Node | None) -> list[RuleConfig | None]:
    """Read every `rule_files` entry of the main file; issues go to ``loader.issues``."""
    if not isinstance(node, SequenceNode):
        return []
    main: Reader = loader.main
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
            resolved = os.path.normpath(loader.base_dir / str(item.value))
        else:
            main.error(item, path, "expected a path or a mapping {include: FILE, params: {...}}")
            continue
        file = Path(resolved)
        seen_key = (file, repr(sorted((k, v[0]) for k, v in params.items())))
        if seen_key in listed:
            main.error(item, path, f"rule file listed twice (first at line {listed[seen_key]})")
            continue
        listed[seen_key] = item.start_mark.line + 1
        try:
            text = read_text(file, min(MAX_FILE_BYTES, MAX_TOTAL_BYTES - loader.read_bytes),
                             what="rule file")  # fmt: skip
        except FileNotFoundError:
            main.error(written_node, path, f"rule file not found: {file}")
            continue
        except InputError as exc:
            main.error(written_node, path, _total_hint(str(exc), loader.read_bytes))
            continue
        loader.read_bytes += len(text)
        written = str(written_node.value)
        shown = (
            written
            if Path(written).is_absolute()
            else os.path.normpath(os.path.join(os.path.dirname(main.file), written))
        )
        reader = Reader(shown, loader.base_dir, loader.issues)
        loader.files.append(shown)
        loader.rule_file_paths.append(str(file))
        substituted = apply_params(reader, text, params, main, item, path)
        if substituted is None:
            rules.append(None)
            continue
        loader.read_bytes += len(substituted) - len(text)
        rules.extend(loader._rule_file(reader, substituted))
    return rules


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
) -> str | None:
    """``text`` with every ``${name}`` replaced; None (issues recorded) when a param is wrong."""
    before = len(reader.issues)
    declared: dict[str, Any] = {}
    root = reader.compose(text) if ("${" in text or "params" in text or given) else None
    if root is None and len(reader.issues) > before:
        return None
    if isinstance(root, MappingNode):
        for key, _, value_node in reader.pairs(root, ""):
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


def _issue(reader: Reader, line: int, column: int, message: str) -> Any:
    from gateway.config_yaml import ConfigIssue

    return ConfigIssue(reader.file, line, column, "", message)


def load_rule_file(
    path: str | Path, params: dict[str, Any] | None = None
) -> tuple[RuleConfig, ...]:
    """Load a standalone rule file or pack (``gateway rules test``): rules only.

    Write and set targets are not checked against devices here; the replay builds its point
    table from the data and the rules. Raises :class:`~gateway.config_yaml.ConfigError`.
    """
    from gateway.config import _Loader
    from gateway.config_yaml import ConfigError, ConfigIssue

    file = Path(path)
    try:
        text = read_text(file, what="rule file")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", "file not found")],
                          unreadable=True) from None  # fmt: skip
    except InputError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", str(exc))], unreadable=True) from None
    loader = _Loader(str(path), file.resolve().parent)
    loader.points = None  # no device points: skip target checks
    reader = Reader(str(path), loader.base_dir, loader.issues)
    entry = MappingNode("tag:yaml.org,2002:map", [])
    given = {k: (v, ScalarNode("tag:yaml.org,2002:str", k)) for k, v in (params or {}).items()}
    substituted = apply_params(reader, text, given, reader, entry, "--param")
    rules = [] if substituted is None else loader._rule_file(reader, substituted)
    if loader.issues or None in rules:
        if not loader.issues:
            loader.issues.append(ConfigIssue(str(path), 0, 0, "", "invalid rule file"))
        raise ConfigError(loader.issues)
    return tuple(r for r in rules if r is not None)


def read_virtual_points(loader: Any, top: Parsed) -> tuple[VirtualPointConfig, ...]:
    """The `virtual_points:` section; names go to ``loader.virtual`` for `set` target checks."""
    from gateway.config import VirtualPointConfig, _fields

    node = top.values.get("virtual_points")
    out: list[VirtualPointConfig] = []
    for i, item in enumerate(node.value if isinstance(node, Node) else ()):
        path = join("virtual_points", i)
        parsed = loader.main.section(item, path, TABLES["virtual_point"])
        if parsed is None or parsed.bad:
            continue
        full = f"virtual.{parsed.values['name']}"
        if full in loader.virtual:
            loader.main.error(parsed.at("name"), join(path, "name"), f"duplicate '{full}'")
            continue
        loader.virtual.add(full)
        out.append(VirtualPointConfig(**_fields(parsed, "virtual_point")))
    return tuple(out)


def rule_positions(parsed: Parsed) -> tuple[tuple[str, int, int], ...]:
    out = []
    for key in ("when", "clear"):
        node = parsed.nodes.get(key)
        if isinstance(node, ScalarNode) and node.start_mark.line == node.end_mark.line:
            quoted = 1 if node.style in ("'", '"') else 0
            if node.style in (None, "", "'", '"'):
                out.append((key, node.start_mark.line + 1, node.start_mark.column + 1 + quoted))
    return tuple(out)
