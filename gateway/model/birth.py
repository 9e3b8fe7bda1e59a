"""The birth record: the whole information model, announced on the ``meta`` stream.

Sparkplug's BIRTH/alias idea on our uplink: telemetry carries compact point ids and the model
version they were written under (the ``model`` field, already in every record); the birth record
maps each id to its meaning: point name, data type, UCUM unit, range, description, source
address, and, for points attached to an asset, the asset's path, the point's name there, its
quantity and semantic id; plus the asset tree with identifiers and nameplates. The version is a
hash of all of it, so any change of meaning is a new version, and a record always resolves
against the model it was written under, also for backlog sent after a change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.core import records
from gateway.model.assets import source_address, to_wire, walk

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig
    from gateway.core.points import PointInfo


def point_extras(config: GatewayConfig) -> dict[str, dict[str, Any]]:
    """Per device point name, the fields the birth record adds to the point table's own."""
    extras: dict[str, dict[str, Any]] = {}
    for dev in config.devices:
        for p in dev.points:
            extra: dict[str, Any] = {"source": source_address(dev, p)}
            rng = getattr(p, "range", None)
            if rng is not None:
                extra["range"] = [float(rng[0]), float(rng[1])]
            extras[f"{dev.name}.{p.name}"] = extra
    for path, asset in walk(config.assets.roots if config.assets else ()):
        for ap in asset.points:
            extra = extras.setdefault(ap.point, {})
            extra.update(asset=asset.id, path=path, asset_point=ap.name)
            if ap.unit:
                extra["unit"] = ap.unit
            if ap.quantity:
                extra["quantity"] = ap.quantity
            if ap.semantic_id:
                extra["semantic_id"] = ap.semantic_id
            if ap.range is not None:
                extra["range"] = [float(ap.range[0]), float(ap.range[1])]
            if ap.description:
                extra["description"] = ap.description
    return extras


def birth_record(config: GatewayConfig, infos: list[PointInfo]) -> tuple[str, bytes]:
    """``(model version, meta payload)`` of this config's model over the point table ``infos``."""
    return records.point_model(config.id, infos, point_extras(config), to_wire(config.assets))
