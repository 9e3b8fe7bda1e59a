"""Reading YAML nodes against the option tables, with file:line:column on every issue.

The loader never works on plain ``yaml.safe_load`` output: it walks the composed node tree, so
every value keeps the mark of where it was written, and it records an issue and carries on
instead of stopping at the first problem.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.bounded import clip, clip_repr
from gateway.config.errors import ConfigIssue
from gateway.config.input import MAX_ISSUES, MAX_NUMBER_CHARS, LimitError
from gateway.config.input import compose as compose_bounded
from gateway.config.options import FORMATS, Option, Section
from gateway.durations import ACCEPTED_FORMS, format_duration, parse_duration

_MERGE_TAG = "tag:yaml.org,2002:merge"
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_STRUCTURAL = ("section", "section_list", "actions", "rule_file_list", "params")


def join(path: str, *keys: str | int) -> str:
    """Extend a key path: ``join("devices", 0, "name") == "devices[0].name"``."""
    for key in keys:
        if isinstance(key, int):
            path = f"{path}[{key}]"
        else:
            path = f"{path}.{key}" if path else key
    return path


def suggest(word: str, candidates: Iterable[str]) -> str:
    """A " (did you mean 'x'?)" suffix for the closest candidate, or "" when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe(node: Node, value: Any = None) -> str:
    """How a value reads in "got ..." parts of messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return clip_repr(value)
    return f"{type(value).__name__} {clip_repr(node.value)}"


class _Bad:
    """Marker for a value that was reported as an issue."""


BAD = _Bad()


@dataclass
class Parsed:
    """A mapping read against a :class:`Section`.

    ``values`` holds every option of the table: converted values, defaults for absent keys.
    Keys whose value was reported as wrong are in ``bad`` and keep their default, so the
    loader can run its cross checks on the rest without chasing follow-up errors.
    """

    node: Node
    path: str
    values: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)
    section: Section | None = None

    def fields(self) -> dict[str, Any]:
        """Dataclass keyword arguments for the scalar options (nested sections and lists are
        built by the caller)."""
        options = self.section.options if self.section is not None else ()
        return {o.field: self.values[o.key] for o in options if o.kind not in _STRUCTURAL}

    def at(self, key: str) -> Node:
        """The value node of ``key``, or the mapping itself when the key was absent."""
        return self.nodes.get(key, self.node)

    def ok(self, *keys: str) -> bool:
        return not any(key in self.bad for key in keys)


class Reader:
    """Walks the nodes of one YAML file and collects :class:`ConfigIssue` s.

    Parameters
    ----------
    file : str
        The file name as shown in messages.
    base_dir : Path
        Directory that relative ``path`` options are resolved against.
    issues : list of ConfigIssue
        Shared across files, so one load reports the config and its rule files together.
    warnings : list of ConfigIssue, optional
        Where :meth:`warn` records what is valid but probably not meant (shared like ``issues``).
    """

    def __init__(
        self,
        file: str,
        base_dir: Path,
        issues: list[ConfigIssue],
        warnings: list[ConfigIssue] | None = None,
    ) -> None:
        self.file = file
        self.base_dir = base_dir
        self.issues = issues
        self.warnings: list[ConfigIssue] = [] if warnings is None else warnings
        self._constructor = SafeConstructor()

    def error(self, node: Node | None, path: str, message: str) -> None:
        if len(self.issues) >= MAX_ISSUES:  # a file of nothing but mistakes: enough to act on
            if len(self.issues) == MAX_ISSUES:
                msg = f"more than {MAX_ISSUES} issues; only the first are listed, fix those first"
                self.issues.append(ConfigIssue(self.file, 0, 0, "", msg))
            return
        mark = node.start_mark if node is not None else None
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        self.issues.append(ConfigIssue(self.file, line, column, path, message))

    def warn(self, node: Node | None, path: str, message: str) -> None:
        """Record a warning: valid, but probably not what the writer meant."""
        if len(self.warnings) >= MAX_ISSUES:
            return
        mark = node.start_mark if node is not None else None
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        self.warnings.append(ConfigIssue(self.file, line, column, path, message))

    def compose(self, text: str) -> Node | None:
        """Parse ``text`` into a node tree; a syntax error or a limit (nesting, size; see
        :mod:`gateway.config.input`) becomes an issue and returns None."""
        try:
            return compose_bounded(text)
        except LimitError as exc:
            mark = exc.problem_mark
            line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
            self.issues.append(
                ConfigIssue(self.file, line, column, "", f"{exc.problem}; not read further")
            )
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or "invalid YAML"
            context = f" ({exc.context})" if exc.context else ""
            if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
                where = f"line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
                context = f" ({exc.context} started at {where})"
            line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
            self.issues.append(
                ConfigIssue(self.file, line, column, "", f"invalid YAML: {problem}{context}")
            )
        except yaml.YAMLError as exc:
            self.issues.append(ConfigIssue(self.file, 0, 0, "", f"invalid YAML: {exc}"))
        return None

    def scalar(self, node: Node, path: str) -> Any:
        """The Python value of a scalar node (YAML 1.1 core types), or BAD."""
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            self.error(node, path, f"a number of {len(node.value)} characters; at most "
                       f"{MAX_NUMBER_CHARS} are read")  # fmt: skip
            return BAD
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.error(node, path, f"cannot read value: {getattr(exc, 'problem', exc)}")
            return BAD
        except (ValueError, OverflowError) as exc:  # e.g. a timestamp like 2024-13-45
            self.error(node, path, f"cannot read value {clip(str(node.value))}: {exc}")
            return BAD

    def pairs(self, node: MappingNode, path: str) -> list[tuple[str, Node, Node]]:
        """``(key, key_node, value_node)`` of a mapping, with ``<<`` merges applied.

        Keys are taken as written (``on:`` stays ``"on"``). A key written twice is an issue;
        keys of the mapping itself override merged ones, as YAML specifies.
        """
        own: dict[str, tuple[str, Node, Node]] = {}
        merged: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node, path))
                continue
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, path, f"keys must be strings; got {describe(key_node)}")
                continue
            key = str(key_node.value)
            if key in own:
                first = own[key][1].start_mark.line + 1
                self.error(
                    key_node,
                    join(path, clip(key, 64)),
                    f"duplicate key '{clip(key, 64)}' (first at line {first})",
                )
                continue
            own[key] = (key, key_node, value_node)
        result = list(own.values())
        seen = set(own)
        for item in merged:
            if item[0] not in seen:
                seen.add(item[0])
                result.append(item)
        return result

    def _merge_sources(self, node: Node, path: str) -> list[tuple[str, Node, Node]]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: list[tuple[str, Node, Node]] = []
        for source in sources:
            if isinstance(source, MappingNode):
                merged.extend(self.pairs(source, path))
            else:
                self.error(source, path, f"'<<' merges mappings only; got {describe(source)}")
        return merged

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def mapping(self, node: Node, path: str, what: str = "a mapping") -> MappingNode | None:
        if isinstance(node, MappingNode):
            return node
        self.error(node, path, f"expected {what}; got {self._got(node)}")
        return None

    def sequence(self, node: Node, path: str, what: str = "a list") -> list[Node] | None:
        if isinstance(node, SequenceNode):
            return list(node.value)
        self.error(node, path, f"expected {what}; got {self._got(node)}")
        return None

    def _got(self, node: Node) -> str:
        if isinstance(node, ScalarNode):
            value = self.scalar(node, "")
            return describe(node, None if value is BAD else value)
        return describe(node)

    def section(self, node: Node, path: str, section: Section) -> Parsed | None:
        """Read a mapping against a table: unknown keys, missing keys, types, bounds.

        Structural options (nested sections, lists of sections, actions) are only checked for
        their container type here; their value nodes are left in ``Parsed.nodes`` for the
        caller. Returns None if ``node`` is not a mapping (already reported).
        """
        mapping = self.mapping(node, path)
        if mapping is None:
            return None
        parsed = Parsed(mapping, path, section=section)
        for key, key_node, value_node in self.pairs(mapping, path):
            option = section.get(key)
            key_path = join(path, key)
            if option is None:
                valid = ", ".join(section.keys())
                hint = suggest(key, section.keys()) if len(key) <= 64 else ""
                shown = clip(key, 64)
                self.error(key_node, join(path, shown),
                           f"unknown key '{shown}'{hint}; valid keys: {valid}")  # fmt: skip
                continue
            parsed.nodes[option.key] = value_node
            value = self.value(option, value_node, key_path)
            if value is BAD:
                parsed.bad.add(option.key)
            else:
                parsed.values[option.key] = value
        for option in section.options:
            if option.key in parsed.values:
                continue
            if option.required:
                if option.key in parsed.bad:
                    continue
                parsed.bad.add(option.key)
                self.error(mapping, join(path, option.key), f"missing required key '{option.key}'")
            else:
                parsed.values[option.key] = self._default(option)
        return parsed

    def _default(self, option: Option) -> Any:
        if option.kind == "path" and option.default is not None:
            return os.path.normpath(self.base_dir / option.default)
        return option.default

    def value(self, option: Option, node: Node, path: str) -> Any:
        """Convert one option's value node, or report it and return BAD."""
        if option.kind in ("section", "section_list", "actions", "rule_file_list", "params"):
            if self.is_null(node) and option.nullable:
                return self._default(option)
            if option.kind in ("section", "params"):
                return node if self.mapping(node, path) is not None else BAD
            return node if self.sequence(node, path) is not None else BAD
        if option.kind == "range":
            if self.is_null(node) and option.nullable:
                return None
            return self._range(node, path)
        if option.kind in ("string_list", "path_list", "duration_map"):
            if self.is_null(node) and option.nullable:
                return self._default(option)
            return self._collection(option, node, path)
        if isinstance(node, ScalarNode):
            value = self.scalar(node, path)
            if value is BAD:
                return BAD
            if value is None and option.nullable:
                return None
            return self._convert(option, node, path, value)
        self.error(node, path, f"expected {expectation(option)}; got {describe(node)}")
        return BAD

    def _range(self, node: Node, path: str) -> Any:
        """``[low, high]``: two finite numbers with low < high, as a tuple of floats."""
        items = self.sequence(node, path, "a range [low, high]")
        if items is None:
            return BAD
        number = Option("range", "number", "")
        values = [self.value(number, child, join(path, i)) for i, child in enumerate(items)]
        if any(v is BAD for v in values):
            return BAD
        if len(values) != 2 or not values[0] < values[1]:
            self.error(node, path, f"expected [low, high] with low < high; got {values}")
            return BAD
        return (float(values[0]), float(values[1]))

    def _collection(self, option: Option, node: Node, path: str) -> Any:
        if option.kind == "duration_map":
            mapping = self.mapping(node, path, "a mapping of name: period")
            if mapping is None:
                return BAD
            periods: dict[str, float] = {}
            item = Option(option.key, "duration", "", minimum=0, exclusive_minimum=True)
            for key, key_node, value_node in self.pairs(mapping, path):
                if not FORMATS["identifier"].check(key):
                    self.error(
                        key_node,
                        join(path, key),
                        f"expected {FORMATS['identifier'].hint}; got {clip_repr(key)}",
                    )
                    continue
                period = self.value(item, value_node, join(path, key))
                if period is not BAD:
                    periods[key] = period
            if len(mapping.value) < option.min_items:
                self.error(node, path, f"expected at least {option.min_items} entry")
                return BAD
            return periods if len(periods) == len(mapping.value) else BAD
        items = self.sequence(node, path)
        if items is None:
            return BAD
        item = Option(option.key, "path" if option.kind == "path_list" else "string", "",
                      format=option.format, min_length=1)  # fmt: skip
        converted = [self.value(item, child, join(path, i)) for i, child in enumerate(items)]
        if len(items) < option.min_items:
            self.error(node, path, f"expected at least {option.min_items} item")
            return BAD
        return BAD if any(v is BAD for v in converted) else tuple(converted)

    def _convert(self, option: Option, node: Node, path: str, value: Any) -> Any:
        kind = option.kind
        got = describe(node, value)
        if kind in ("string", "path", "choice"):
            if not isinstance(value, str):
                quote = " (quote it to make it text)" if isinstance(value, int | float) else ""
                self.error(node, path, f"expected {expectation(option)}; got {got}{quote}")
                return BAD
            return self._text(option, node, path, value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            self.error(node, path, f"expected true or false; got {got}")
            return BAD
        if kind == "value":
            if isinstance(value, bool):
                return "1" if value else "0"
            if isinstance(value, int | float) and math.isfinite(value):
                return repr(value)
            if isinstance(value, str) and value.strip():
                return value
            self.error(node, path, f"expected {expectation(option)}; got {got}")
            return BAD
        number: float
        if kind == "duration":
            try:
                number = parse_duration(value)
            except ValueError:
                self.error(node, path, f"expected {expectation(option)}; got {got}")
                return BAD
            if not isinstance(value, str) and number > 0 and _in_bounds(option, number):
                self.warn(node, path, f"duration {got} has no unit and is taken as {number:g} "
                          f"seconds; write {format_duration(number)} to say so")  # fmt: skip
        elif isinstance(value, str):
            unquote = " (remove the quotes)" if _numeric(value) else ""
            self.error(node, path, f"expected {expectation(option)}; got {got}{unquote}")
            return BAD
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(node, path, f"expected {expectation(option)}; got {got}")
                return BAD
            number = value
        else:  # number
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.error(node, path, f"expected {expectation(option)}; got {got}")
                return BAD
            number = float(value)
            if not math.isfinite(number):
                self.error(node, path, f"expected a finite number; got {got}")
                return BAD
        if not _in_bounds(option, number):
            self.error(node, path, f"expected {expectation(option)}; got {got}")
            return BAD
        return number

    def _text(self, option: Option, node: Node, path: str, value: str) -> Any:
        if option.kind == "choice":
            if value in option.choices:
                return value
            if value in option.planned:
                supported = ", ".join(option.choices)
                self.error(node, path, f"'{value}' comes later; supported now: {supported}")
            else:
                hint = suggest(value, option.choices)
                self.error(
                    node, path, f"expected {expectation(option)}; got {clip_repr(value)}{hint}"
                )
            return BAD
        if len(value.strip()) < max(option.min_length, 1 if option.kind == "path" else 0):
            self.error(node, path, f"expected {expectation(option)}; got {clip_repr(value)}")
            return BAD
        fmt = FORMATS[option.format] if option.format else None
        if fmt is not None and not fmt.check(value):
            self.error(node, path, f"expected {fmt.hint}; got {clip_repr(value)}")
            return BAD
        if option.kind == "path":
            return os.path.normpath(self.base_dir / Path(value).expanduser())
        return value


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _in_bounds(option: Option, number: float) -> bool:
    if option.minimum is not None:
        if number < option.minimum or (option.exclusive_minimum and number == option.minimum):
            return False
    if option.maximum is not None and number > option.maximum:
        return False
    return not (option.nonzero and number == 0)


def expectation(option: Option) -> str:
    """What an option accepts, phrased for "expected ..." messages."""
    kind = option.kind
    if kind == "choice":
        return "one of " + ", ".join(option.choices)
    if kind == "duration":
        return f"a duration{_bounds(option)}: {ACCEPTED_FORMS}"
    if kind in ("integer", "number"):
        article = "an integer" if kind == "integer" else "a number"
        if (
            option.minimum is not None
            and option.maximum is not None
            and not option.exclusive_minimum
        ):
            return f"{article} {option.minimum:g}..{option.maximum:g}"
        return ("a non-zero number" if option.nonzero else article) + _bounds(option)
    if kind == "path":
        return "a path (a non-empty string)"
    if kind == "value":
        return "a number or an expression string"
    if option.format is not None:
        return FORMATS[option.format].hint
    return "a non-empty string" if option.min_length else "a string"


def _bounds(option: Option) -> str:
    parts = []
    if option.minimum is not None:
        parts.append(f"{'>' if option.exclusive_minimum else '>='} {option.minimum:g}")
    if option.maximum is not None:
        parts.append(f"<= {option.maximum:g}")
    return " " + " and ".join(parts) if parts else ""
