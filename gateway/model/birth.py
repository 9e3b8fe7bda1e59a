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

import logging
from typing import TYPE_CHECKING, Any

from gateway.core import records
from gateway.model.assets import source_address, to_wire, walk

_log = logging.getLogger("gateway.model")

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig
    from gateway.core.points import PointInfo


def point_extras(config: GatewayConfig) -> dict[str, dict[str, Any]]:
    """Per device point name, the fields the birth record adds to the point table's own."""
    extras: dict[str, dict[str, Any]] = {}
    for dev in config.devices:
        signals = _dbc_signals(dev)
        for p in dev.points:
            extra: dict[str, Any] = {"source": source_address(dev, p)}
            unit, rng = signals.get(p.signal or "", ("", None))
            if not p.unit and unit:
                extra["unit"] = unit
            rng = getattr(p, "range", None) or rng
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


def _dbc_signals(dev: Any) -> dict[str, tuple[str, tuple[float, float] | None]]:
    """``MESSAGE.SIGNAL`` -> (UCUM unit, range) from a CAN device's DBC: what the protocol
    knows fills in what the config leaves out. A unit that is not UCUM (nor an alias) is left
    out (logged), never guessed."""
    if dev.driver != "can" or dev.can is None or not dev.can.dbc:
        return {}
    from gateway.drivers.can.dbc import DbcError, load_dbc
    from gateway.model.units import UnitError, normalize

    try:
        db = load_dbc(dev.can.dbc)
    except DbcError as exc:
        _log.warning("device %s: no units from its DBC: %s", dev.name, exc)
        return {}
    out: dict[str, tuple[str, tuple[float, float] | None]] = {}
    for msg in db.messages:
        for sig in msg.signals:
            unit = ""
            if sig.unit:
                try:
                    unit = normalize(sig.unit)
                except UnitError:
                    _log.info("device %s: DBC unit %r of %s.%s is not UCUM; not announced",
                              dev.name, sig.unit, msg.name, sig.name)  # fmt: skip
            lo, hi = sig.minimum, sig.maximum
            rng = (float(lo), float(hi)) if lo is not None and hi is not None and lo < hi else None
            out[f"{msg.name}.{sig.name}"] = (unit, rng)
    return out


def birth_record(config: GatewayConfig, infos: list[PointInfo]) -> tuple[str, bytes]:
    """``(model version, meta payload)`` of this config's model over the point table ``infos``."""
    return records.point_model(config.id, infos, point_extras(config), to_wire(config.assets))
