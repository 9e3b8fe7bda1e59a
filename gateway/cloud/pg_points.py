"""Decoded rows for queries: telemetry records into per-sample rows, meta records into names.

Runs inside the store's commit, on the records that commit stores (never on duplicates), so the
``points`` table holds each sample exactly once, like ``records``. Everything here comes from a
peer: a record that does not decode is skipped and counted (it is still stored as a record), a
sample with a time or quality outside what the columns hold is skipped, and the names a gateway
announces are bounded in length, number per model and number of models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gateway.core.records import STREAM_META, STREAM_TELEMETRY, decode

MAX_NAME = 200  # characters of a point name, unit or device kept
MAX_POINTS_PER_MODEL = 65536
MAX_MODELS_PER_GATEWAY = 64
_TS_MAX = 4102444800.0  # 2100-01-01: a later (or negative, or NaN) sample time is refused
_INT32 = 2**31

NameRow = tuple[str, str, int, str, str, str]
_NONE = type(None)


@dataclass
class Decoded:
    """What one commit's fresh records decode to: sample columns (for one ``unnest`` insert)
    and announced names. ``k`` is each sample's 1-based index into ``pairs`` (its gateway and
    model), so the text columns are sent once per pair, not once per sample."""

    pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    k: list[int] = field(default_factory=list)
    pid: list[int] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    names: list[NameRow] = field(default_factory=list)
    skipped_records: int = 0
    skipped_samples: int = 0

    def __len__(self) -> int:
        return len(self.pid)

    def add(self, gateway: str, model: str, pid: list[int], ts: list[float],
            value: list[float | None], quality: list[int]) -> None:  # fmt: skip
        k = self.pairs.setdefault((gateway, model), len(self.pairs) + 1)
        self.k.extend([k] * len(pid))
        self.pid.extend(pid)
        self.ts.extend(ts)
        self.value.extend(value)
        self.quality.extend(quality)


def _text(v: object) -> str:
    """A name for a text column: bounded, and without NUL (PostgreSQL text cannot hold it)."""
    return (v if isinstance(v, str) else "" if v is None else str(v))[:MAX_NAME].replace("\0", "")


def _value(x: object) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, int | float):
        try:
            return float(x)
        except OverflowError:  # an int beyond a double
            return None
    return None


def decode_into(out: Decoded, gateway: str, stream: str, payloads: list[bytes]) -> None:
    """Add the rows of ``payloads`` (fresh records of one stream) to ``out``."""
    if stream == STREAM_TELEMETRY:
        for p in payloads:
            try:
                _telemetry(out, gateway, decode(p))
            except (ValueError, KeyError, TypeError, AttributeError):
                out.skipped_records += 1
    elif stream == STREAM_META:
        for p in payloads:
            try:
                _meta(out, gateway, decode(p))
            except (ValueError, KeyError, TypeError, AttributeError):
                out.skipped_records += 1


def _telemetry(out: Decoded, gateway: str, rec: dict[str, Any]) -> None:
    model = _text(rec["model"])
    ids, ts, xs, qs = rec["id"], rec["ts"], rec["x"], rec["q"]
    if not (len(ids) == len(ts) == len(xs) == len(qs)):
        raise ValueError("columns of different lengths")
    if not ids:
        return
    # The common case, checked column by column in C loops: ints, finite sample times in range,
    # values float or nil. Anything else is sorted out sample by sample below.
    if (
        set(map(type, ids)) == {int}
        and set(map(type, qs)) == {int}
        and set(map(type, ts)) == {float}
        and set(map(type, xs)) <= {float, _NONE}
        and 0 <= min(ids)
        and max(ids) < _INT32
        and -_INT32 <= min(qs)
        and max(qs) < _INT32
        and not any(map(math.isnan, ts))
        and 0.0 <= min(ts)
        and max(ts) < _TS_MAX
    ):
        out.add(gateway, model, ids, ts, xs, qs)
        return
    keep: tuple[list[int], list[float], list[float | None], list[int]] = ([], [], [], [])
    for pid, t, x, q in zip(ids, ts, xs, qs, strict=True):
        if (
            type(pid) is not int
            or not 0 <= pid < _INT32
            or type(q) is not int
            or not -_INT32 <= q < _INT32
            or type(t) not in (int, float)
            or not 0.0 <= t < _TS_MAX  # also refuses NaN
        ):
            out.skipped_samples += 1
            continue
        keep[0].append(pid)
        keep[1].append(float(t))
        keep[2].append(_value(x))
        keep[3].append(q)
    out.add(gateway, model, *keep)


def _meta(out: Decoded, gateway: str, rec: dict[str, Any]) -> None:
    model = _text(rec["model"])
    points = rec["points"]
    if not isinstance(points, list):
        raise TypeError("points is not a list")
    for i, p in enumerate(points[:MAX_POINTS_PER_MODEL]):
        pid = p.get("id", i)
        if type(pid) is not int or not 0 <= pid < _INT32:
            continue
        name = _text(p.get("name"))
        if not name:
            continue
        out.names.append((gateway, model, pid, name, _text(p.get("unit")), _text(p.get("device"))))
