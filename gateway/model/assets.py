"""The asset tree: ISA-95 levels, one stable id and identifier per thing, points by meaning.

An asset is a node of the tree (enterprise, site, area, line, cell, asset: any depth the plant
needs). Its **path** is the ids from the root, ``plant1/line1/press1``; ids are unique in the
whole tree, so any tail of a path (``line1/press1``, or ``press1`` alone) names one asset, and
``line1/press1.temperature`` one point. An asset's points map a name with meaning (quantity,
UCUM unit, semantic id) onto a device point (``press1.temp``), which stays what telemetry
carries: the model adds meaning without touching the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config.model import DeviceConfig, PointConfig

LEVELS = ("enterprise", "site", "area", "line", "cell", "asset")


@dataclass(frozen=True)
class AssetPoint:
    """A point of an asset: its name there and the device point (``device.point``) it reads."""

    name: str
    point: str
    quantity: str = ""  # e.g. "temperature", "vibration velocity"
    unit: str = ""  # UCUM; the device point's unit when not given here
    semantic_id: str = ""  # IEC 61360 / ECLASS IRDI (0173-1#02-AAB381#003) or any URI
    range: tuple[float, float] | None = None
    description: str = ""
    source: str = ""  # where the value comes from (driver address), filled by the loader


@dataclass(frozen=True)
class Asset:
    id: str
    level: str = "asset"
    name: str = ""
    type: str = ""  # the asset type it was instantiated from
    identifier: str = ""  # one code per thing: GS1 Digital Link, Handle, OID URN, any URI
    manufacturer: str = ""
    model: str = ""
    serial: str = ""
    device: str = ""  # device whose points a type's points refer to
    semantic_id: str = ""
    points: tuple[AssetPoint, ...] = ()
    children: tuple[Asset, ...] = ()


@dataclass(frozen=True)
class AssetsConfig:
    """The ``assets:`` section: the tree, and whether every device point must be in it."""

    roots: tuple[Asset, ...] = ()
    strict: bool = False
    types: tuple[str, ...] = field(default=(), compare=False)  # names of the declared types


def walk(roots: tuple[Asset, ...], prefix: str = "") -> Iterator[tuple[str, Asset]]:
    """``(path, asset)`` of every asset, parents before children."""
    for asset in roots:
        path = f"{prefix}/{asset.id}" if prefix else asset.id
        yield path, asset
        yield from walk(asset.children, path)


def suffixes(path: str) -> list[str]:
    """Every tail of ``a/b/c``: ``a/b/c``, ``b/c``, ``c``."""
    parts = path.split("/")
    return ["/".join(parts[i:]) for i in range(len(parts))]


def point_paths(assets: AssetsConfig | None) -> dict[str, str]:
    """``asset-path.point`` -> device point name, for every path tail that contains a ``/``.

    These are the names rules may use besides ``device.point``; a tail without ``/``
    (``press1.temperature``) is left out, since it reads like a device point.
    """
    out: dict[str, str] = {}
    for path, asset in walk(assets.roots if assets else ()):
        for tail in suffixes(path)[:-1]:
            for p in asset.points:
                out[f"{tail}.{p.name}"] = p.point
    return out


def find_asset(assets: AssetsConfig | None, ref: str) -> tuple[str, Asset] | None:
    """The asset a path or path tail (``line1/press1``, ``press1``) names, with its full path."""
    ref = ref.strip("/")
    for path, asset in walk(assets.roots if assets else ()):
        if path == ref or path.endswith("/" + ref):
            return path, asset
    return None


def to_wire(assets: AssetsConfig | None) -> list[dict[str, Any]]:
    """The tree for the birth record, flat (parents first): plain types, msgpack and JSON safe."""
    from gateway.model.identifiers import IdentifierError
    from gateway.model.identifiers import parse as parse_identifier

    out: list[dict[str, Any]] = []
    for path, a in walk(assets.roots if assets else ()):
        scheme = ""
        if a.identifier:
            try:
                scheme = parse_identifier(a.identifier).scheme
            except IdentifierError:  # checked by the loader; never fail a birth record
                scheme = "uri"
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        out.append({
            "id": a.id, "path": path, "parent": parent, "level": a.level, "name": a.name or a.id,
            "type": a.type, "identifier": a.identifier, "scheme": scheme,
            "semantic_id": a.semantic_id,
            "nameplate": {"manufacturer": a.manufacturer, "model": a.model, "serial": a.serial},
            "points": [
                {"name": p.name, "point": p.point, "quantity": p.quantity, "unit": p.unit,
                 "semantic_id": p.semantic_id,
                 "range": list(p.range) if p.range is not None else None,
                 "description": p.description, "source": p.source}
                for p in a.points
            ],
        })  # fmt: skip
    return out


def source_address(dev: DeviceConfig, p: PointConfig) -> str:
    """Where a point's value comes from, as one string (``modbus_tcp://host:502/1/holding/40``)."""
    driver = dev.driver
    if driver == "can" and p.signal:
        channel = dev.can.channel if dev.can else ""
        return f"can://{channel}/{p.signal}"
    if driver == "node" and p.channel is not None:
        node_id = dev.node.node_id if dev.node else ""
        return f"node://{node_id}/{p.channel}"
    node = getattr(p, "node", None)  # OPC UA points name a NodeId
    if node:
        endpoint = getattr(getattr(dev, "opcua", None), "endpoint", "")
        return f"{endpoint}#{node}" if endpoint else str(node)
    if p.address is not None:
        if driver == "modbus_rtu" and dev.rtu is not None and dev.rtu.transport == "serial":
            where = dev.rtu.port
        else:
            where = f"{dev.host}:{dev.port}"
        return f"{driver}://{where}/{dev.unit_id}/{p.table}/{p.address}"
    return f"{driver}://{dev.name}/{p.name}"
