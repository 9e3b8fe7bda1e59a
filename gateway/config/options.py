"""The building blocks of the option tables: option kinds, formats, :class:`Option`, :class:`Section`.

Each option is declared once (key, type, default, constraints, description), Fluent Bit style.
The tables themselves are in :mod:`gateway.config.schema` (and the ``models:`` ones in
:mod:`gateway.config.models`); the loader validates against them, and
:mod:`gateway.config.docs` turns them into the JSON Schema and ``docs/config.md``, so validation,
editor hints and documentation cannot drift apart.
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
    "actions",  # a rule's action list (alarm | event | write | set | log)
    "rule_file_list",  # rule_files: paths, or {include: path, params: {...}} mappings
    "params",  # a mapping identifier -> number | string | boolean | null (rule pack params)
    "value",  # a write value: number, string or boolean, kept as expression text
    "range",  # [low, high]: two finite numbers, low < high
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
    "sha256": Format(r"^[0-9a-f]{64}$", "64 lowercase hex digits (`sha256sum FILE`)"),
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


def duration_option(
    key: str, doc: str, default: Any, *, period: bool = True, attr: str | None = None
) -> Option:
    """A duration option; periods must be strictly positive, other durations >= 0."""
    return Option(key, "duration", doc, default, attr=attr, minimum=0, exclusive_minimum=period)
