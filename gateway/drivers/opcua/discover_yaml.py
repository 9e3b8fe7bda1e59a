"""The YAML that ``gateway discover opcua`` writes: point names, one line per point, comments.

Kept apart from the browsing (``discover.py``) so the text can be tested without a server. One
flow mapping per point keeps a 5,000-point device readable and diffable; PyYAML quotes each
value as the flow context needs (a Description with a comma, a NodeId with ``;``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Variable:
    """What discovery learnt about one variable; ``skip`` says why it is not a point."""

    node: str  # NodeId string, asyncua syntax
    path: tuple[str, ...]  # BrowseNames from the root
    display_name: str = ""
    description: str = ""
    data_type: str = ""
    type: str = ""
    type_note: str = ""
    unit: str = ""
    range: tuple[float, float] | None = None
    writable: bool = False
    skip: str = ""
    name: str = field(default="", compare=False)


def snake(text: str) -> str:
    """``BarrelTemperature`` -> ``barrel_temperature``, ``EURange`` -> ``eu_range``, anything
    that is not a letter, digit or ``_`` -> ``_``."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    text = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return re.sub(r"_+", "_", text)


def common_prefix(paths: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """The leading BrowseNames every path shares, short of any path's last one."""
    if not paths:
        return ()
    prefix: list[str] = []
    for parts in zip(*(p[:-1] for p in paths), strict=False):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return tuple(prefix[: min(len(p) - 1 for p in paths)])


def assign_names(variables: Sequence[Variable]) -> tuple[str, ...]:
    """Give every variable a unique identifier from its path below the shared prefix (which is
    returned: it names the device). Clashes get ``_2``, ``_3``..."""
    prefix = common_prefix([v.path for v in variables])
    taken: set[str] = set()
    for v in variables:
        base = "_".join(filter(None, (snake(p) for p in v.path[len(prefix) :]))) or "point"
        if not IDENTIFIER.fullmatch(base):
            base = f"p_{base}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        v.name = name
    return prefix


def _number(x: float) -> float | int:
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def _flow(mapping: Any) -> str:
    text = yaml.safe_dump(
        mapping, default_flow_style=True, sort_keys=False, allow_unicode=True, width=1 << 20
    )
    return text.strip()


def _scalar(value: str) -> str:
    """``value`` as a YAML plain or quoted scalar (whichever it needs)."""
    return _flow({"v": value})[4:-1]


#: Point ``type`` values discovery writes as the key (see PointSchema); none today.
CONFIG_TYPES: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PointSchema:
    """Which point keys and ``type`` values the configuration loader accepts.

    What it does not accept is kept as a comment on the point's line instead: the file then
    passes ``gateway check`` as it is, and nothing the server said is lost. Today that is
    ``range`` while the configuration lacks it (the information model's key, issue 11), and
    always ``type``: a point's ``type`` is the Modbus register type (``bool`` only in coil
    tables), and the OPC UA driver takes each variable's type from its DataType on the server
    (a String becomes text events, an Int64 a number), so the mapped type is a comment
    (``# float64 (Double)``). Should the configuration get an OPC UA ``type``, list its values
    in :data:`CONFIG_TYPES`.
    """

    keys: frozenset[str]
    types: frozenset[str] = frozenset()

    @classmethod
    def of_loader(cls) -> PointSchema:
        from gateway.config.schema import TABLES

        return cls(frozenset(o.key for o in TABLES["point"].options), CONFIG_TYPES)


def point_line(v: Variable, schema: PointSchema | None = None) -> str:
    """One ``points:`` item; commented out, with the reason, when the variable is skipped."""
    schema = schema or PointSchema.of_loader()
    item: dict[str, Any] = {"name": v.name, "node": v.node}
    notes = [v.type_note] if v.type_note else []
    if v.type and not v.skip:
        if "type" in schema.keys and v.type in schema.types:
            item["type"] = v.type
        else:
            notes.append(f"{v.type} ({v.data_type})")
    if v.unit:
        item["unit"] = v.unit
    if v.range is not None:
        rng = [_number(v.range[0]), _number(v.range[1])]
        if "range" in schema.keys:
            item["range"] = rng
        else:
            notes.append(f"EURange {_flow(rng)}")
    if v.writable:
        item["writable"] = True
    # Servers often repeat the BrowseName as DisplayName and Description: no news, left out.
    said = {v.path[-1] if v.path else "", v.name}
    description = next((d for d in (v.description, v.display_name) if d and d not in said), "")
    if description:
        item["description"] = description
    line = f"- {_flow(item)}"
    if v.skip:
        return f"# {line}  # skipped: {v.skip}"
    return f"{line}  # {', '.join(notes)}" if notes else line


@dataclass
class Endpoint:
    """How the device section reaches the server (what the driver's ``opcua:`` says)."""

    url: str
    security_policy: str = "None"
    security_mode: str = "None"
    server_certificate: str = ""
    username: str = ""
    password_file: str = ""


def render(
    device: str,
    endpoint: Endpoint,
    variables: Sequence[Variable],
    header: Sequence[str] = (),
    poll: str = "1s",
    schema: PointSchema | None = None,
) -> str:
    """The whole file: header comments, then ``devices:`` with one device."""
    schema = schema or PointSchema.of_loader()
    lines = [f"# {h}" if h else "#" for h in header]
    lines += ["devices:", f"  - name: {device}", "    driver: opcua", "    opcua:"]
    lines.append(f"      endpoint: {_scalar(endpoint.url)}")
    lines.append("      mode: subscribe")
    lines.append(f"      security_policy: {endpoint.security_policy}")
    lines.append(f"      security_mode: {endpoint.security_mode}")
    if endpoint.security_policy == "None":
        lines.append("      insecure: true  # SecurityPolicy None: no signature, no encryption")
    if endpoint.server_certificate:
        lines.append(f"      server_certificate: {_scalar(endpoint.server_certificate)}")
    if endpoint.username:
        lines.append(f"      username: {_scalar(endpoint.username)}")
        if endpoint.password_file:
            lines.append(f"      password_file: {_scalar(endpoint.password_file)}")
    lines.append(f"    poll_groups: {{default: {poll}}}")
    if not variables:
        lines.append("    points: []  # no variables found")
    else:
        lines.append("    points:")
        lines += [f"      {point_line(v, schema)}" for v in variables]
    return "\n".join(lines) + "\n"
