"""What the runtime shows operators: Prometheus metrics and the JSON ``/status`` snapshot."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from gateway import impl
from gateway.core.metrics import Labels
from gateway.core.model import Quality
from gateway.infer.wiring import collect_model_metrics

if TYPE_CHECKING:
    from gateway.core.runtime import Runtime


def describe_metrics(rt: Runtime) -> None:
    m = rt.metrics
    m.describe("samples_total", "counter", "Samples received from all drivers")
    m.describe("samples_bad_total", "counter", "Samples with bad quality (timeouts, exceptions)")
    m.describe("alarms_total", "counter", "Alarm transitions by rule and state")
    m.describe("writes_total", "counter", "Device writes executed for rules, by outcome")
    m.describe(
        "task_errors_total",
        "counter",
        "Exceptions caught where they would have ended a task, by place",
    )
    m.describe("driver_restarts_total", "counter", "Stalled devices restarted by the supervisor")
    m.describe("driver_stalled", "gauge", "1 while a device is online but delivers nothing")
    m.describe("storage_degraded", "gauge", "1 while local persistence fails (see /health)")
    m.describe(
        "alarm_state_save_failures_total",
        "counter",
        "Alarm-state snapshots the queue could not take (kept in memory, retried with the next)",
    )
    m.describe("condition_active", "gauge", "1 while a gateway condition is active")
    m.describe("condition_episodes_total", "counter", "Times a gateway condition was raised")
    m.add_collector(lambda: collect(rt))


def collect(rt: Runtime) -> list[tuple[str, Labels, float]]:
    out: list[tuple[str, Labels, float]] = [
        ("samples_per_second", (), rt.rate.rate),
    ]
    up: dict[str, Any] = rt.uplink.stats()
    out.append(("uplink_connected", (), 1.0 if up.get("link") == "connected" else 0.0))
    for key in ("submitted", "committed", "sent", "acks", "retransmits", "oldest_age_s",
                "nacks", "reconnects", "drops_sent", "commands", "in_flight"):  # fmt: skip
        if isinstance(up.get(key), int | float):
            out.append((f"uplink_{key}", (), float(up[key])))
    for reason, n in (up.get("dropped_by") or {}).items():
        out.append(("uplink_dropped_total", (("reason", reason),), float(n)))
    for stream, st in (up.get("streams") or {}).items():
        for key in ("depth", "acked_hw", "next_seq", "bytes"):
            if isinstance(st.get(key), int | float):
                out.append((f"queue_{key}", (("stream", stream),), float(st[key])))
    for name, dev in rt.devices.items():
        for key, value in dev.stats().items():
            if isinstance(value, bool | int | float):
                out.append((f"device_{key}", (("device", name),), float(value)))
    for rule, st in rt.rules.stats().items():
        for key, value in st.items():
            out.append((f"rule_{key}", (("rule", rule),), float(value)))
    if rt.models is not None:
        out.extend(collect_model_metrics(rt.models))
    out.extend(collect_selfcheck(rt))
    return out


def collect_selfcheck(rt: Runtime) -> list[tuple[str, Labels, float]]:
    """Fault isolation, supervision and storage health (gateway.core.guard/supervisor/health)."""
    out: list[tuple[str, Labels, float]] = [
        ("task_errors_total", (("where", where),), float(n)) for where, n in task_errors(rt).items()
    ]
    for name, st in rt.supervisor.stats().items():
        labels = (("device", name),)
        out.append(("driver_restarts_total", labels, float(st["restarts"])))
        out.append(("driver_stalled", labels, 1.0 if st["stalled"] else 0.0))
    check = rt.selfcheck
    out.append(("storage_degraded", (), float("storage_degraded" in check.conditions.active)))
    out.append(("alarm_state_save_failures_total", (), float(rt.rules.save_errors)))
    out.extend(check.conditions.metrics())
    return out


def status(rt: Runtime) -> dict[str, Any]:
    """A JSON-able snapshot for `gateway demo` and operators."""
    pts = []
    for info in rt.points.infos:
        v = float(rt.points.last_value[info.id])
        pts.append(
            {
                "name": info.name,
                "value": None if v != v else v,
                "unit": info.unit,
                "ts": float(rt.points.last_ts[info.id]),
                "quality": Quality(int(rt.points.last_quality[info.id])).name.lower(),
                "writable": info.writable,
            }
        )
    return {
        "gateway": rt.config.id,
        "ts": rt.clock(),
        "samples_per_second": rt.rate.rate,
        "samples_total": rt.metrics.get("samples_total"),
        "points": pts,
        "devices": {name: dev.stats() for name, dev in rt.devices.items()},
        "alarms": [dataclasses.asdict(a) for a in rt.rules.alarms()],
        "uplink": rt.uplink.stats(),
        "models": rt.models.stats() if rt.models is not None else {},
        "recent": list(rt.recent),
        "problems": {n: c.reason for n, c in rt.selfcheck.conditions.active.items()},
        "supervisor": rt.supervisor.stats(),
        "task_errors": task_errors(rt),
        "native": native_report(),
    }


def native_report() -> dict[str, Any]:
    """Which twin of each hot path runs (gateway/impl.py): on a target, ``loaded: false`` means a
    package built for another machine or Python fell back to the slower pure-Python code."""
    files = {
        name: os.path.basename(getattr(getattr(impl, name), "__file__", "") or "")
        for name in impl.NATIVE_MODULES
    }
    return {
        "loaded": all(v == "native" for v in impl.IMPLEMENTATION.values()),
        "modules": dict(impl.IMPLEMENTATION),
        "files": files,
        "forced_pure": os.environ.get("GATEWAY_PUREPYTHON") == "1",
    }


def task_errors(rt: Runtime) -> dict[str, int]:
    """Exceptions caught by the runtime, the supervisor and the status server, by place (the
    drivers count theirs in their stats as ``task_errors``)."""
    out = dict(rt.faults.total)
    out.update(rt.supervisor.faults.total)
    if rt._status_server is not None:
        out.update(rt._status_server.faults.total)
    return out
