"""What the API shows of the runtime: plain JSON-able dicts, read at request time only.

Nothing here is called from the sample path; every function reads state the stages keep anyway
(point table columns, rings, driver and rule counters), so an API nobody calls costs nothing.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from gateway.core.model import Quality

if TYPE_CHECKING:
    from gateway.core.runtime import Runtime
    from gateway.rules.rule import Rule

MAX_SAMPLES = 4096


def _num(v: float) -> float | None:
    v = float(v)
    return None if v != v or v in (float("inf"), float("-inf")) else v


def point(rt: Runtime, pid: int, samples: int = 0) -> dict[str, Any]:
    info = rt.points.infos[pid]
    out: dict[str, Any] = {
        "name": info.name,
        "device": info.device,
        "type": info.type,
        "unit": info.unit,
        "description": info.description,
        "writable": info.writable,
        "value": _num(rt.points.last_value[pid]),
        "ts": _num(rt.points.last_ts[pid]),
        "quality": Quality(int(rt.points.last_quality[pid])).name.lower(),
    }
    if samples:
        ring = rt.points.rings[pid]
        n = min(samples, len(ring), MAX_SAMPLES)
        ts, values = ring.last(n) if n else ((), ())
        pairs = zip(list(map(float, ts)), list(map(float, values)), strict=True)
        out["samples"] = [[_num(t), _num(v)] for t, v in pairs]
    return out


def device(rt: Runtime, name: str) -> dict[str, Any]:
    dev = rt.devices[name]
    st = dev.stats()
    cfg = next(d for d in rt.config.devices if d.name == name)
    rtt = st.get("last_rtt_ms")
    last_error = next(
        (e.get("detail", "") for e in reversed(rt.recent)
         if e.get("kind") == "device" and e.get("device") == name and e.get("state") == "offline"),
        "",
    )  # fmt: skip
    sup = rt.supervisor.stats().get(name, {})
    return {
        "name": name,
        "driver": cfg.driver,
        "state": st.get("state", "online" if st.get("online") else "offline"),
        "online": bool(st.get("online", False)),
        "last_error": last_error or None,
        "round_trip_s": _num(rtt / 1000.0) if isinstance(rtt, int | float) else None,
        "stalled": bool(sup.get("stalled", False)),
        "restarts": int(sup.get("restarts", 0)),
        "points": [i.name for i in rt.points.infos if i.device == name],
        "counters": {
            k: v
            for k, v in st.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "last_rtt_ms"
        },  # fmt: skip
        "blocks": blocks(rt, name),
    }


def blocks(rt: Runtime, name: str) -> list[dict[str, Any]]:
    """The device's read blocks (Modbus): what ``poll`` can read once, by index."""
    plan = getattr(rt.devices[name], "plan", None)
    if plan is None:
        return []
    out: list[dict[str, Any]] = []
    for g in plan.groups:
        for b in g.blocks:
            out.append({"index": len(out), "group": g.name, "table": b.table,
                        "address": b.address, "count": b.count, "points": list(b.names)})  # fmt: skip
    return out


def rule_state(rule: Rule, now: float) -> str:
    """``disabled``, ``active``, ``holding`` (condition true, waiting for ``for:``),
    ``cooldown`` (fired recently, a new episode would be suppressed) or ``idle``."""
    if not rule.enabled:
        return "disabled"
    if rule.active:
        return "active"
    if rule.hold_start is not None:
        return "holding"
    if rule.cooldown and rule.last_fire is not None and now - rule.last_fire < rule.cooldown:
        return "cooldown"
    return "idle"


def rules(rt: Runtime) -> list[dict[str, Any]]:
    now = rt.clock()
    stats = rt.rules.stats()
    out = []
    for r in rt.rules._rules:
        st = stats.get(r.name, {})
        out.append({
            "name": r.name,
            "enabled": r.enabled,
            "state": rule_state(r, now),
            "severity": r.severity,
            "last_fired": r.last_fire,
            "firings": int(st.get("firings", 0)),
            "clears": int(st.get("clears", 0)),
            "evaluations": int(st.get("evaluations", 0)),
            "suppressed": int(st.get("suppressed", 0)),
            "writes_refused": int(st.get("writes_refused", 0)),
            "eval_time_s": _num(st.get("eval_time_s", 0.0)),
            "source": r.cfg.source or None,
        })  # fmt: skip
    return out


def alarms(rt: Runtime) -> list[dict[str, Any]]:
    return [{**dataclasses.asdict(a), "state": a.state} for a in rt.rules.alarms()]


def models(rt: Runtime) -> list[dict[str, Any]]:
    if rt.models is None:
        return []
    out = []
    last = {}
    for name, slot in rt.models.slots.items():
        last[name] = {o: _num(rt.points.last_value[rt.points.id_of(f"{name}.{o}")])
                      for o in (x.name for x in slot.config.outputs)
                      if f"{name}.{o}" in rt.points}  # fmt: skip
    for name, st in rt.models.stats().items():
        out.append({
            "name": name, "state": st["state"], "reason": st["reason"] or None,
            "file": st["file"], "sha256": st["sha256"],
            "latency_p50_s": _num(st["latency_p50_s"]), "latency_p99_s": _num(st["latency_p99_s"]),
            "invocations": st["invocations"], "errors": st["errors"], "dropped": st["dropped"],
            "last_output": last.get(name, {}),
        })  # fmt: skip
    return out


def uplink(rt: Runtime) -> dict[str, Any]:
    st: dict[str, Any] = rt.uplink.stats()
    streams: dict[str, Any] = st.get("streams") or {}
    return {
        "link": st.get("link"),
        "queue_depth": sum(int(s.get("depth", 0)) for s in streams.values()),
        "queue_bytes": sum(int(s.get("bytes", 0)) for s in streams.values()),
        "oldest_age_s": _num(st["oldest_age_s"])
        if isinstance(st.get("oldest_age_s"), int | float)
        else None,
        "dropped": dict(st.get("dropped_by") or {}),
        "streams": streams,
        "counters": {
            k: v for k, v in st.items() if isinstance(v, int | float) and not isinstance(v, bool)
        },  # fmt: skip
    }
