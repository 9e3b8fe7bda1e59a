"""Model versions: birth records decoded, telemetry resolved against the version it names.

Shared by the cloud (:mod:`gateway.cloud.models` reads the versions from the store) and the
gateway's own tools (``gateway queue peek``): a telemetry record names the model version it was
written under, so it resolves against that version, also when it was queued before a change and
arrives after the new birth record. Each sample becomes ``{asset, path, point, unit, ts, value,
quality}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.core import records

QUALITY = ("good", "uncertain", "bad")
MAX_VERSIONS = 256  # per gateway kept in memory (a peer controls how many it announces)


@dataclass
class Model:
    """One version of one gateway's model: its point table and asset tree."""

    gateway: str
    version: str
    points: list[dict[str, Any]]
    assets: list[dict[str, Any]] = field(default_factory=list)

    def asset(self, ref: str) -> dict[str, Any] | None:
        """The asset a path, a tail of it (``line1/press1``) or an identifier names."""
        ref = ref.strip()
        for a in self.assets:
            path = str(a.get("path", ""))
            if ref and (path == ref.strip("/") or path.endswith("/" + ref.strip("/"))):
                return a
            if ref and a.get("identifier") == ref:
                return a
        return None

    def points_of(self, path: str) -> list[dict[str, Any]]:
        """The points attached to the asset at ``path`` (not its children's)."""
        return [p for p in self.points if p.get("path") == path]

    def sample(self, pid: int, ts: float, x: Any, q: int) -> dict[str, Any]:
        p = self.points[pid] if 0 <= pid < len(self.points) else None
        if not isinstance(p, dict):  # unknown id, or a damaged record: shown as the id
            return named(None, f"#{pid}", ts, x, q)
        return named(p, str(p.get("name", f"#{pid}")), ts, x, q)


def named(p: dict[str, Any] | None, name: str, ts: Any, x: Any, q: Any) -> dict[str, Any]:
    """One named, unit-ful sample; ``asset``/``path`` null for a point attached to no asset."""
    path = p.get("path") if p else None
    return {
        "asset": p.get("asset") if p and path else None,
        "path": f"{path}.{p.get('asset_point')}" if p and path else None,
        "point": name,
        "unit": (p.get("unit") or None) if p else None,
        "ts": ts,
        "value": x,
        "quality": QUALITY[q] if isinstance(q, int) and 0 <= q < len(QUALITY) else q,
    }


class ModelVersions:
    """gateway -> version -> :class:`Model`, learnt from birth records (in the order seen)."""

    def __init__(self) -> None:
        self._models: dict[str, dict[str, Model]] = {}

    def learn(self, gateway: str, rec: dict[str, Any]) -> Model | None:
        """Take a decoded ``meta`` record (others are ignored); returns its model."""
        if rec.get("kind") != "point_model" or not isinstance(rec.get("model"), str):
            return None
        points, assets = rec.get("points"), rec.get("assets") or []
        if not isinstance(points, list) or not isinstance(assets, list):
            return None
        versions = self._models.setdefault(gateway, {})
        model = Model(gateway, rec["model"], points, assets)
        versions.pop(model.version, None)  # re-announced: it is the latest again
        versions[model.version] = model
        while len(versions) > MAX_VERSIONS:
            del versions[next(iter(versions))]
        return model

    def learn_payloads(self, gateway: str, payloads: Iterable[bytes]) -> int:
        """Learn from raw meta payloads; damaged ones are skipped. Returns how many were read."""
        n = 0
        for payload in payloads:
            try:
                rec = records.decode(payload)
            except Exception:  # noqa: BLE001 - a damaged meta record names nothing
                continue
            if isinstance(rec, dict) and self.learn(gateway, rec) is not None:
                n += 1
        return n

    def gateways(self) -> list[str]:
        return list(self._models)

    def versions(self, gateway: str) -> list[str]:
        return list(self._models.get(gateway, {}))

    def get(self, gateway: str, version: str) -> Model | None:
        return self._models.get(gateway, {}).get(version)

    def latest(self, gateway: str) -> Model | None:
        versions = self._models.get(gateway)
        return next(reversed(versions.values())) if versions else None

    def named(self, gateway: str, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """A telemetry record's samples, named by the version it was written under."""
        model = self.get(gateway, str(rec.get("model", "")))
        cols = zip(rec["id"], rec["ts"], rec["x"], rec["q"], strict=True)
        if model is None:
            return [named(None, f"#{pid}", ts, x, q) for pid, ts, x, q in cols]
        return [model.sample(pid, ts, x, q) for pid, ts, x, q in cols]
