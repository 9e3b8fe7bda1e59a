"""``GET /api/events``: a Server-Sent Events stream of what changed, for the web page.

Each client's stream looks at the runtime every ``interval`` (1 s by default) and sends what
changed since its last look: no hook on the sample path, so the stream costs the hot path
nothing, and one client costs one sleeping task. Events (``data`` is one JSON document):

``hello``    ``{gateway, ts, interval_s}`` once, first
``points``   ``{ts, points: [{name, value, ts, quality}]}``: points whose sample time changed
``alarms``   the list of ``GET /api/alarms``, when any alarm changed
``devices``  ``{name: {state, online, round_trip_s, last_error}}`` when any changed
``uplink``   ``{link, queue_depth, queue_bytes, oldest_age_s, dropped}`` when it changed
``rules``    ``{name: state}`` (idle/holding/active/cooldown/disabled) when any changed
``event``    each new entry of the runtime's recent events (alarms, writes, device changes)

A comment line (``: keepalive``) every 15 s keeps proxies open and finds closed clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.api import views
from gateway.core.httpd import Response
from gateway.jsonsafe import dumps

if TYPE_CHECKING:
    from gateway.core.runtime import Runtime

MAX_STREAMS = 8
KEEPALIVE_S = 15.0
_open: dict[int, int] = {}  # runtime id -> open streams


def _frame(event: str, doc: Any) -> bytes:
    return f"event: {event}\ndata: {dumps(doc)}\n\n".encode()


def open_stream(rt: Runtime, interval: float) -> Response:
    if _open.get(id(rt), 0) >= MAX_STREAMS:
        return Response.json(503, {"error": f"at most {MAX_STREAMS} event streams; close one",
                                   "status": 503}, [("Retry-After", "5")])  # fmt: skip
    return Response(200, b"", "text/event-stream", [("X-Accel-Buffering", "no")],
                    stream=_stream(rt, interval))  # fmt: skip


async def _stream(rt: Runtime, interval: float) -> AsyncIterator[bytes]:
    key = id(rt)
    _open[key] = _open.get(key, 0) + 1
    try:
        yield b"retry: 3000\n\n" + _frame(
            "hello", {"gateway": rt.config.id, "ts": rt.clock(), "interval_s": interval}
        )
        seen_ts = None
        last: dict[str, Any] = {}
        last_recent: Any = rt.recent[-1] if rt.recent else None
        quiet_since = time.monotonic()
        while True:
            chunks = []
            ts = rt.points.last_ts
            if seen_ts is None or len(seen_ts) != len(ts):
                changed: list[int] = list(range(len(ts)))
            else:  # a new sample time; NaN (never seen) is not a change
                changed = np.flatnonzero((ts != seen_ts) & ~np.isnan(ts)).tolist()
            seen_ts = ts.copy()
            if changed:
                pts = [{k: p[k] for k in ("name", "value", "ts", "quality")}
                       for p in (views.point(rt, i) for i in changed)]  # fmt: skip
                chunks.append(_frame("points", {"ts": rt.clock(), "points": pts}))
            for name, doc in _snapshots(rt).items():
                if last.get(name) != doc:
                    last[name] = doc
                    chunks.append(_frame(name, doc))
            recent = list(rt.recent)
            new = recent
            if last_recent is not None:
                for i in range(len(recent) - 1, -1, -1):
                    if recent[i] is last_recent:
                        new = recent[i + 1 :]
                        break
            if recent:
                last_recent = recent[-1]
            chunks.extend(_frame("event", e) for e in new)
            now = time.monotonic()
            if chunks:
                quiet_since = now
                yield b"".join(chunks)
            elif now - quiet_since >= KEEPALIVE_S:
                quiet_since = now
                yield b": keepalive\n\n"
            await asyncio.sleep(interval)
    finally:
        _open[key] -= 1


def _snapshots(rt: Runtime) -> dict[str, Any]:
    devices = {}
    for name in rt.devices:
        d = views.device(rt, name)
        devices[name] = {k: d[k] for k in ("state", "online", "last_error", "stalled")}
        rtt = d["round_trip_s"]
        devices[name]["round_trip_s"] = None if rtt is None else round(rtt, 4)
    up = views.uplink(rt)
    return {
        "alarms": views.alarms(rt),
        "devices": devices,
        "uplink": {k: up[k] for k in ("link", "queue_depth", "queue_bytes", "dropped")}
        | {"oldest_age_s": None if up["oldest_age_s"] is None else round(up["oldest_age_s"], 1)},
        "rules": {r.name: views.rule_state(r, rt.clock()) for r in rt.rules._rules},
    }
