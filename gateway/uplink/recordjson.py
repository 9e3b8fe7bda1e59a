"""Uplink records as JSON lines, with point names: what ``gateway subscribe`` and ``gateway queue
peek|export`` print.

Telemetry carries numeric point ids and the hash of the point model they refer to (see
:mod:`gateway.core.records`); the names come from that model's ``meta`` record, which these tools
learn from the records they pass and, when a record refers to a model they have not seen, look up
where it is kept (the queue file, the cloud store, the gateway's config). Every line is valid JSON
(``jq`` reads it): bytes become base64, NaN and infinities ``null``.
"""

from __future__ import annotations

import base64
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.core import records
from gateway.jsonsafe import dumps, jsonable
from gateway.model.versions import ModelVersions

#: ``lookup(gateway)`` -> the payloads of that gateway's ``meta`` records, newest first.
__all__ = ["PointNames", "dumps", "jsonable", "sample_lines", "shown", "store_lookup"]

ModelLookup = Callable[[str], Iterable[bytes]]

_RETRY_S = 1.0  # a model not found is looked up again at most this often (it may arrive later)


class PointNames:
    """Point model hash -> point names, from the meta records seen and from ``lookup``."""

    def __init__(self, lookup: ModelLookup | None = None, hint: str = "") -> None:
        self._decoder = records.ModelDecoder()
        self._versions = ModelVersions()  # keyed by version alone: a version is its content
        self._known: set[str] = set()
        self._lookup = lookup
        self._tried: dict[str, float] = {}
        self._warned: set[str] = set()
        self._hint = hint

    def learn(self, rec: dict[str, Any]) -> None:
        """Take a decoded ``point_model`` record (others are ignored)."""
        if rec.get("kind") == "point_model" and isinstance(rec.get("model"), str):
            self._decoder.add_model(rec)
            self._versions.learn("", rec)
            self._known.add(rec["model"])

    def learn_payloads(self, payloads: Iterable[bytes]) -> None:
        for payload in payloads:
            try:
                self.learn(records.decode(payload))
            except Exception:  # a damaged meta record names nothing: skip it
                continue

    def samples(self, gateway: str, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """A telemetry record's columns as ``[{point, ts, value, quality}]``; a point of a model
        found nowhere is ``#id`` (said once on stderr)."""
        model = rec.get("model", "")
        if model not in self._known:
            self._find(gateway, model)
        return [
            {"point": name, "ts": ts, "value": x, "quality": q}
            for name, ts, x, q in self._decoder.samples(rec)
        ]

    def named(self, gateway: str, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """A telemetry record's samples as ``[{asset, path, point, unit, ts, value, quality}]``,
        resolved against the model version the record names (see :mod:`gateway.model.versions`)."""
        model = rec.get("model", "")
        if model not in self._known:
            self._find(gateway, model)
        return self._versions.named("", rec)

    def _find(self, gateway: str, model: str) -> None:
        now = time.monotonic()
        if self._lookup is not None and now - self._tried.get(model, -_RETRY_S) >= _RETRY_S:
            self._tried[model] = now
            try:
                self.learn_payloads(self._lookup(gateway))
            except (OSError, sqlite3.Error) as exc:
                self._warn(model, f"{gateway}: point names unavailable: {exc}")
                return
        if model not in self._known:
            self._warn(
                model,
                f"{gateway}: point model {model} not seen (yet){self._hint}; points shown as #id",
            )

    def _warn(self, model: str, text: str) -> None:
        if model not in self._warned:
            self._warned.add(model)
            print(text, file=sys.stderr, flush=True)


def shown(stream: str, gateway: str, payload: bytes, names: PointNames) -> Any:
    """One record for a JSON line: decoded, telemetry with point names, else base64."""
    try:
        rec = records.decode(payload)
    except Exception as exc:  # a consumer tool shows bad payloads, it does not die
        return {"undecodable": str(exc), "base64": base64.b64encode(payload).decode()}
    names.learn(rec)
    if stream == records.STREAM_TELEMETRY and isinstance(rec.get("id"), list):
        try:
            samples = names.samples(gateway, rec)
        except (KeyError, TypeError, ValueError) as exc:
            return {
                "undecodable": f"telemetry: {exc}",
                "base64": base64.b64encode(payload).decode(),
            }
        rest = {k: v for k, v in rec.items() if k not in ("id", "ts", "x", "q")}
        return {**rest, "samples": samples}
    return rec


def sample_lines(
    stream: str, gateway: str, seq: int, payload: bytes, names: PointNames
) -> list[dict[str, Any]] | None:
    """A telemetry record as one line per named sample (``gateway subscribe``'s default); None
    for any other record (or one that cannot be read), which is shown whole by :func:`shown`."""
    if stream != records.STREAM_TELEMETRY:
        return None
    try:
        rec = records.decode(payload)
        if not isinstance(rec.get("id"), list):
            return None
        samples = names.named(gateway, rec)
    except Exception:  # noqa: BLE001 - shown whole (undecodable) instead
        return None
    head = {"gateway": gateway, "stream": stream, "seq": seq, "model": rec.get("model")}
    return [{**head, **s} for s in samples]


def store_lookup(db: str) -> ModelLookup:
    """Meta records of a gateway from a cloud store file, read-only (the receiver keeps running)."""

    def lookup(gateway: str) -> list[bytes]:
        if not Path(db).exists():
            raise FileNotFoundError(f"no cloud store at {db} (--db)")
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute(
                "SELECT payload FROM records WHERE gateway = ? AND stream = ? "
                "ORDER BY epoch DESC, seq DESC LIMIT 100",
                (gateway, records.STREAM_META),
            ).fetchall()
        finally:
            con.close()
        return [bytes(p) for (p,) in rows]

    return lookup
