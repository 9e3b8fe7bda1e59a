"""The ``assets:`` section: the information model's tree, asset types, and their checks.

The option tables (``assets``, ``asset_type``, ``asset``, ``asset_point``) are here, listed by
:mod:`gateway.config.schema` with every other table. This module checks what a table cannot:
unique asset ids, known types, identifiers of a known scheme with the right syntax, UCUM units
that agree with the device point's, points that exist and belong to one asset, and in strict
mode that every device point belongs to one. Types are instantiated here: an asset with
``type: Press`` and ``device: press3`` gets the type's points on ``press3``'s points.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Final

from yaml.nodes import Node

from gateway.config.model import DeviceConfig, PointConfig
from gateway.config.options import Option, Section
from gateway.config.reader import Parsed, Reader, join, suggest
from gateway.model.assets import LEVELS, Asset, AssetPoint, AssetsConfig, source_address
from gateway.model.identifiers import IdentifierError
from gateway.model.identifiers import parse as parse_identifier
from gateway.model.units import UnitError, normalize

#: ECLASS / IEC 61360 IRDI, e.g. 0173-1#02-AAB381#003 (also 0112/2///61360_4#AAA001#001)
_IRDI = re.compile(r"\d{4}-\d#\d{2}-[A-Z0-9]{6}#\d{3}|\d{4}/\d///[0-9A-Za-z_]+#[A-Z0-9]{6}#\d{3}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
MAX_ASSETS = 10_000

_POINT_OPTIONS = (
    Option("name", "string", "The point's name in the asset, e.g. `temperature`; unique in the "
           "asset. Rules may write `<asset path>.<name>` (`line1/press1.temperature`).",
           format="identifier"),
    Option("point", "string", "The device point it reads: `device.point`, or just `point` when "
           "the asset (or the instance of a type) sets `device`.", min_length=1),
    Option("quantity", "string", "What is measured, e.g. `temperature`, `vibration velocity`.",
           ""),
    Option("unit", "string", "UCUM unit (`Cel`, `mm/s`, `kW`, `bar`, `L/min`, `{parts}`; "
           "aliases such as `degC` are accepted). Must agree with the device point's unit; "
           "gives the point its unit when the device point has none.", ""),
    Option("semantic_id", "string", "IEC 61360 / ECLASS IRDI (`0173-1#02-AAB381#003`) or a URI "
           "naming the property's definition.", ""),
    Option("range", "range", "Measuring range `[low, high]`; default: the device point's.", None,
           nullable=True),
    Option("description", "string", "Free text; default: the device point's.", ""),
)  # fmt: skip

_NAMEPLATE = (
    Option("manufacturer", "string", "Nameplate: manufacturer.", ""),
    Option("model", "string", "Nameplate: model / type designation.", ""),
    Option("semantic_id", "string", "IRDI or URI of the asset's class (e.g. an ECLASS class).",
           ""),
)  # fmt: skip

_ASSETS = Section(
    "assets",
    "assets",
    "assets",
    "The information model (docs/information-model.md): an ISA-95 tree of assets, each with a "
    "stable id, an identifier and a nameplate, to which device points are attached with their "
    "meaning. Announced upstream in the birth record.",
    (
        Option("strict", "boolean", "Every device point must be attached to an asset.", False),
        Option("types", "section_list", "Reusable asset types (a `Press` with its points), "
               "instantiated by `type:` in the tree.", (), nullable=True, table="asset_type"),
        Option("tree", "section_list", "The top-level assets (enterprise or site), with their "
               "`children`.", (), nullable=True, table="asset"),
    ),
)  # fmt: skip

_ASSET_TYPE = Section(
    "asset_type",
    "assets.types[]",
    "assets.types[]",
    "An asset type: nameplate defaults and points; its points name device points relative to "
    "the instance's `device`.",
    (
        Option("name", "string", "Type name, e.g. `Press`; unique.", format="identifier"),
        Option("level", "choice", "ISA-95 level of its instances.", "asset", choices=LEVELS),
        *_NAMEPLATE,
        Option("points", "section_list", "The type's points.", (), nullable=True,
               table="asset_point"),
    ),
)  # fmt: skip

_ASSET = Section(
    "asset",
    "assets.tree[]",
    "assets.tree[] (and children[])",
    "One asset. Its path is the ids from the root (`plant1/line1/press1`); any tail of it "
    "(`line1/press1`) names it too.",
    (
        Option("id", "string", "Stable id, unique in the whole tree (part of paths, so letters, "
               "digits and `_`).", format="identifier"),
        Option("level", "choice", "ISA-95 level (default: the type's, else `asset`).", None,
               choices=LEVELS, nullable=True, default_doc="the type's, else `asset`"),
        Option("name", "string", "Display name; default: the id.", ""),
        Option("type", "string", "Asset type to instantiate (from `assets.types`).", None,
               nullable=True, format="identifier"),
        Option("identifier", "string", "One code per thing: a GS1 Digital Link URI, a Handle "
               "(`88.100.1/suffix`, `hdl:`), an OID URN (`urn:oid:1.3...`), checked; or any "
               "URI, carried as given.", ""),
        *_NAMEPLATE,
        Option("serial", "string", "Nameplate: serial number.", ""),
        Option("device", "string", "Device whose points the type's points (and bare `point` "
               "names) refer to.", None, nullable=True, format="identifier"),
        Option("points", "section_list", "Points of this asset (besides its type's).", (),
               nullable=True, table="asset_point"),
        Option("children", "section_list", "Assets below this one.", (), nullable=True,
               table="asset"),
    ),
)  # fmt: skip

_ASSET_POINT = Section(
    "asset_point",
    "assets...points[]",
    "assets.types[].points[], assets.tree[].points[]",
    "A point of an asset: a device point with its meaning.",
    _POINT_OPTIONS,
)

ASSET_TABLES: Final[tuple[Section, ...]] = (_ASSETS, _ASSET_TYPE, _ASSET, _ASSET_POINT)


def unit_issue(text: str) -> tuple[str, str]:
    """``(ucum code, "")`` or ``("", problem)`` for a unit as written in a config."""
    try:
        return normalize(text), ""
    except UnitError as exc:
        return "", f"not a UCUM unit: {exc}"


def semantic_issue(text: str) -> str:
    if not text or _IRDI.fullmatch(text) or _SCHEME.fullmatch(text):
        return ""
    return (f"expected an IEC 61360 / ECLASS IRDI (e.g. 0173-1#02-AAB381#003) or a URI; "
            f"got {text!r}")  # fmt: skip


class _Type:
    def __init__(self, parsed: Parsed, points: list[tuple[Parsed, str]]) -> None:
        self.parsed = parsed
        self.points = points  # (parsed point, its path)


class AssetReading:
    """The ``assets:`` part of a load (mixed into :class:`gateway.config.loader.Loader`)."""

    main: Reader
    # full device point name -> (name node, key path), filled by the device part
    point_nodes: dict[str, tuple[Node, str]]
    marks: dict[str, tuple[int, int, str]]  # device names read (with their driver's position)

    def _assets(self, top: Parsed, devices: list[DeviceConfig | None]) -> AssetsConfig | None:
        """The tree, or None (issues recorded; also None when the section is absent)."""
        node = top.values.get("assets") if top.ok("assets") else None
        if not isinstance(node, Node):
            return None
        parsed = self.main.section(node, "assets", _ASSETS)
        if parsed is None:
            return None
        reader = self.main
        before = len(reader.issues)
        by_point: dict[str, PointConfig] = {}
        dev_of: dict[str, DeviceConfig] = {}
        for dev in (d for d in devices if d is not None):
            for p in dev.points:
                by_point[f"{dev.name}.{p.name}"] = p
                dev_of[f"{dev.name}.{p.name}"] = dev
        # devices and points with issues of their own are known by name: no follow-up errors
        ctx = _Context(reader, by_point, dev_of, {*self.marks, *(d.name for d in devices if d)})
        ctx.declared = set(self.point_nodes)
        types = self._types(reader, parsed.values.get("types"), ctx)
        tree = parsed.values.get("tree")
        roots = [
            ctx.asset(item, join("assets.tree", i), types)
            for i, item in enumerate(tree.value if isinstance(tree, Node) else ())
        ]
        strict = parsed.values["strict"] if parsed.ok("strict") else False
        if strict:
            for name, (name_node, path) in self.point_nodes.items():
                if name not in ctx.attached:
                    reader.error(name_node, path, f"point {name} is attached to no asset, and "
                                 "assets.strict is true; attach it under assets.tree (a "
                                 "`points:` entry with `point: " + name + "`)")  # fmt: skip
        if len(reader.issues) > before or parsed.bad or None in roots:
            return None
        return AssetsConfig(tuple(r for r in roots if r is not None), strict, tuple(types))

    def _types(self, reader: Reader, node: Any, ctx: _Context) -> dict[str, _Type]:
        types: dict[str, _Type] = {}
        first: dict[str, int] = {}
        for i, item in enumerate(node.value if isinstance(node, Node) else ()):
            path = join("assets.types", i)
            parsed = reader.section(item, path, _ASSET_TYPE)
            if parsed is None or not parsed.ok("name"):
                continue
            name = parsed.values["name"]
            if name in first:
                reader.error(parsed.at("name"), join(path, "name"),
                             f"duplicate asset type '{name}' (first at line {first[name]})")  # fmt: skip
                continue
            first[name] = parsed.at("name").start_mark.line + 1
            ctx.nameplate(parsed, path)
            points = []
            pnode = parsed.values.get("points")
            for j, pitem in enumerate(pnode.value if isinstance(pnode, Node) else ()):
                ppath = join(path, "points", j)
                pp = reader.section(pitem, ppath, _ASSET_POINT)
                if pp is not None:
                    points.append((pp, ppath))
            types[name] = _Type(parsed, points)
        return types


class _Context:
    """State of one read of the tree: ids seen, points attached, the device points."""

    def __init__(
        self, reader: Reader, by_point: dict[str, PointConfig], dev_of: dict[str, DeviceConfig],
        devices: set[str],
    ) -> None:  # fmt: skip
        self.reader = reader
        self.by_point = by_point
        self.dev_of = dev_of
        self.devices = devices
        self.ids: dict[str, int] = {}
        self.declared: set[str] = set()  # every device point declared, read cleanly or not
        self.attached: dict[str, str] = {}  # device point -> "asset.point (line N)"
        self.count = 0

    def nameplate(self, parsed: Parsed, path: str) -> None:
        sid = parsed.values.get("semantic_id") if parsed.ok("semantic_id") else ""
        if problem := semantic_issue(sid or ""):
            self.reader.error(parsed.at("semantic_id"), join(path, "semantic_id"), problem)

    def asset(self, node: Node, path: str, types: dict[str, _Type]) -> Asset | None:
        reader = self.reader
        self.count += 1
        if self.count > MAX_ASSETS:
            if self.count == MAX_ASSETS + 1:
                reader.error(node, path, f"more than {MAX_ASSETS} assets; split the model")
            return None
        parsed = reader.section(node, path, _ASSET)
        if parsed is None:
            return None
        v = parsed.values
        ok = not parsed.bad
        aid = v["id"] if parsed.ok("id") else None
        if aid is not None:
            if aid in self.ids:
                reader.error(parsed.at("id"), join(path, "id"),
                             f"duplicate asset id '{aid}' (first at line {self.ids[aid]}); ids "
                             "are unique in the whole tree")  # fmt: skip
                ok = False
            else:
                self.ids[aid] = parsed.at("id").start_mark.line + 1
        ident = v.get("identifier") or ""
        if ident and parsed.ok("identifier"):
            try:
                parse_identifier(ident)
            except IdentifierError as exc:
                reader.error(parsed.at("identifier"), join(path, "identifier"),
                             f"bad identifier: {exc}")  # fmt: skip
                ok = False
        self.nameplate(parsed, path)
        device = v.get("device") if parsed.ok("device") else None
        if device is not None and device not in self.devices:
            reader.error(parsed.at("device"), join(path, "device"),
                         f"unknown device '{device}'{suggest(device, self.devices)}")  # fmt: skip
            ok = False
            device = None
        typ: _Type | None = None
        tname = v.get("type") if parsed.ok("type") else None
        fields: dict[str, Any] = {}
        if tname is not None:
            typ = types.get(tname)
            if typ is None:
                known = ", ".join(types) or "none declared under assets.types"
                reader.error(parsed.at("type"), join(path, "type"),
                             f"unknown asset type '{tname}'{suggest(tname, types)}; known: "
                             f"{known}")  # fmt: skip
                ok = False
            else:
                tv = typ.parsed.values
                fields = {k: tv[k] for k in ("level", "manufacturer", "model", "semantic_id")
                          if typ.parsed.ok(k)}  # fmt: skip
        for key in ("manufacturer", "model", "semantic_id"):
            if v.get(key):
                fields[key] = v[key]
        if v.get("level"):
            fields["level"] = v["level"]
        points: list[AssetPoint] = []
        names: dict[str, int] = {}
        sources = [*(typ.points if typ else ()), *self._own_points(parsed, path)]
        for pp, ppath in sources:
            point = self.point(pp, ppath, device, aid or "?", names)
            if point is None:
                ok = False
            else:
                points.append(point)
        children = []
        cnode = v.get("children")
        for i, item in enumerate(cnode.value if isinstance(cnode, Node) else ()):
            child = self.asset(item, join(path, "children", i), types)
            if child is None:
                ok = False
            children.append(child)
        if not ok or aid is None:
            return None
        return Asset(
            id=aid, name=v["name"], type=tname or "", identifier=ident, serial=v["serial"],
            device=device or "", points=tuple(points),
            children=tuple(c for c in children if c is not None), **fields,
        )  # fmt: skip

    def _own_points(self, parsed: Parsed, path: str) -> list[tuple[Parsed, str]]:
        out = []
        pnode = parsed.values.get("points")
        for j, item in enumerate(pnode.value if isinstance(pnode, Node) else ()):
            ppath = join(path, "points", j)
            pp = self.reader.section(item, ppath, _ASSET_POINT)
            if pp is not None:
                out.append((pp, ppath))
        return out

    def point(
        self, pp: Parsed, path: str, device: str | None, asset: str, names: dict[str, int]
    ) -> AssetPoint | None:
        """One point of an asset (from its type or its own list), checked against the device."""
        reader, v = self.reader, pp.values
        if pp.bad:
            return None
        ok = True
        name, ref = v["name"], v["point"]
        if name in names:
            reader.error(pp.at("name"), join(path, "name"),
                         f"duplicate point name '{name}' in asset '{asset}' (first at line "
                         f"{names[name]})")  # fmt: skip
            ok = False
        names[name] = pp.at("name").start_mark.line + 1
        code = ""
        if v["unit"]:
            code, problem = unit_issue(v["unit"])
            if problem:
                reader.error(pp.at("unit"), join(path, "unit"), problem)
                ok = False
        if problem := semantic_issue(v["semantic_id"]):
            reader.error(pp.at("semantic_id"), join(path, "semantic_id"), problem)
            ok = False
        full = ref if "." in ref else (f"{device}.{ref}" if device else None)
        if full is None:
            reader.error(pp.at("point"), join(path, "point"),
                         f"'{ref}' names a point of the asset's device, but the asset sets no "
                         "`device:`; set it or write device.point")  # fmt: skip
            return None
        dp = self.by_point.get(full)
        if dp is None and full in self.declared:  # its device has an issue (reported there)
            self.attached.setdefault(full, f"{asset}.{name}")
            return None
        if dp is None:
            reader.error(pp.at("point"), join(path, "point"),
                         f"unknown device point '{full}'{suggest(full, self.by_point)}")  # fmt: skip
            return None
        where = f"{asset}.{name} (line {pp.at('name').start_mark.line + 1})"
        if full in self.attached:
            reader.error(pp.at("point"), join(path, "point"),
                         f"{full} is already attached as {self.attached[full]}; a device point "
                         "belongs to one asset")  # fmt: skip
            ok = False
        self.attached[full] = where
        unit = dp.unit
        if code and unit and code != unit:
            reader.error(pp.at("unit"), join(path, "unit"),
                         f"unit {code} disagrees with {full}'s unit {unit}; a point has one "
                         "unit (fix one of them)")  # fmt: skip
            ok = False
        unit = unit or code
        if not ok:
            return None
        return AssetPoint(
            name=name, point=full, quantity=v["quantity"], unit=unit,
            semantic_id=v["semantic_id"],
            range=v["range"] if v["range"] is not None else getattr(dp, "range", None),
            description=v["description"] or dp.description,
            source=source_address(self.dev_of[full], dp),
        )  # fmt: skip


def with_units(assets: AssetsConfig | None, devices: tuple[DeviceConfig, ...]) -> tuple[
    DeviceConfig, ...
]:  # fmt: skip
    """Devices whose points without a unit take the unit their asset point gives them."""
    if assets is None:
        return devices
    from gateway.model.assets import walk

    given = {p.point: p.unit for _, a in walk(assets.roots) for p in a.points if p.unit}
    out = []
    for dev in devices:
        points = tuple(
            replace(p, unit=given[f"{dev.name}.{p.name}"])
            if not p.unit and f"{dev.name}.{p.name}" in given
            else p
            for p in dev.points
        )
        out.append(replace(dev, points=points) if points != dev.points else dev)
    return tuple(out)
