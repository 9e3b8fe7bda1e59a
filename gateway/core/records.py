"""Uplink record formats: what the runtime puts into the opaque payloads the uplink carries.

Three streams:

``meta``
    the point model (ids, names, types, units, writable, descriptions), sent at start-up so the cloud
    knows what every id means without a side channel. Its ``model`` hash is carried by every telemetry
    record, so a consumer can tell which model a record refers to.
``telemetry``
    columnar sample batches: ``{"v": 1, "model": str, "id": [...], "ts": [...], "x": [...], "q": [...]}``.
``events``
    the priority stream: alarms raised/cleared, device online/offline, writes and their outcome.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import numpy as np

from gateway.core.model import SampleBatch
from gateway.core.points import PointInfo
from gateway.core.telemetry_wire import telemetry_record

RECORD_VERSION = 1
STREAM_META = "meta"
STREAM_TELEMETRY = "telemetry"
STREAM_EVENTS = "events"


def point_model(
    gateway_id: str,
    infos: list[PointInfo],
    extras: dict[str, dict[str, Any]] | None = None,
    assets: list[dict[str, Any]] | None = None,
) -> tuple[str, bytes]:
    """Encode the point model; returns ``(model_hash, payload)``.

    ``extras`` adds information-model fields per point name, ``assets`` the asset tree (see
    :mod:`gateway.model.birth`); the hash covers them, so it is the model version. Without
    either, the record and its hash are what they were before the information model.
    """
    points = [info.to_wire() for info in infos]
    if extras:
        points = [{**p, **extras.get(info.name, {})} for p, info in zip(points, infos, strict=True)]
    body = msgpack.packb([points, assets] if assets else points, use_bin_type=True)
    model = hashlib.sha256(body).hexdigest()[:16]
    rec: dict[str, Any] = {
        "v": RECORD_VERSION,
        "kind": "point_model",
        "gateway": gateway_id,
        "model": model,
        "points": points,
    }
    if assets:
        rec["assets"] = assets
    return model, msgpack.packb(rec, use_bin_type=True)


def encode_telemetry(model: str, batch: SampleBatch) -> bytes:
    """One telemetry record for a batch; NaN values (bad quality) are sent as nil.

    Built from the columns directly (:mod:`gateway.core.telemetry_wire`); decodes to what
    :func:`encode_telemetry_reference` encodes."""
    return telemetry_record(
        RECORD_VERSION,
        model,
        np.asarray(batch.point_ids, np.uint32),
        np.asarray(batch.ts, np.float64),
        np.asarray(batch.values, np.float64),
        np.asarray(batch.quality, np.uint8),
    )


def encode_telemetry_reference(model: str, batch: SampleBatch) -> bytes:
    """:func:`encode_telemetry` by ``msgpack.packb`` of Python lists (the tests' reference)."""
    values = batch.values
    x: list[float | None] = values.tolist()
    if np.isnan(values).any():
        x = [None if v != v else v for v in x]
    return msgpack.packb(
        {
            "v": RECORD_VERSION,
            "model": model,
            "id": batch.point_ids.tolist(),
            "ts": batch.ts.tolist(),
            "x": x,
            "q": batch.quality.tolist(),
        },
        use_bin_type=True,
    )


def encode_event(kind: str, ts: float, **fields: Any) -> bytes:
    return msgpack.packb({"v": RECORD_VERSION, "kind": kind, "ts": ts, **fields}, use_bin_type=True)


def decode(payload: bytes) -> dict[str, Any]:
    """Decode any record; raises ValueError on a record of an unknown version."""
    rec = msgpack.unpackb(payload, raw=False)
    if not isinstance(rec, dict) or rec.get("v") != RECORD_VERSION:
        raise ValueError(f"not a version-{RECORD_VERSION} gateway record")
    return rec


class ModelDecoder:
    """Turns telemetry records back into named samples, given the point model records seen so far."""

    def __init__(self) -> None:
        self._models: dict[str, list[dict[str, Any]]] = {}

    def add_model(self, rec: dict[str, Any]) -> None:
        self._models[rec["model"]] = rec["points"]

    def samples(self, rec: dict[str, Any]) -> list[tuple[str, float, float | None, int]]:
        """``[(point name, ts, value, quality)]``; names are ``#id`` when the model is unknown."""
        points = self._models.get(rec.get("model", ""))
        out = []
        for pid, ts, x, q in zip(rec["id"], rec["ts"], rec["x"], rec["q"], strict=True):
            name = points[pid]["name"] if points and pid < len(points) else f"#{pid}"
            out.append((name, ts, x, q))
        return out
