"""What the runtime shows operators: Prometheus metrics and the JSON ``/status`` snapshot."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from gateway import impl
from gateway.core.metrics import HistogramRow, Labels, build_info_labels
from gateway.core.model import Quality
from gateway.infer.runner import LATENCY_BUCKETS
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
    m.describe("api_requests_total", "counter", "REST API requests by route and status code")
    m.describe("api_refusals_total", "counter",
               "REST API requests refused by authentication or authorization, by reason")  # fmt: skip
    m.histogram("api_request_duration_seconds", "Time to answer a REST API request (seconds)",
                (0.001, 0.005, 0.02, 0.1, 0.5, 2.0))  # fmt: skip
    m.describe("build_info", "gauge", "Version of the gateway and its Python (value 1)")
    m.describe("samples_per_second", "gauge", "Samples received per second (sliding 2 s)")
    m.describe("uplink_connected", "gauge", "1 while the uplink's link to the cloud is up")
    m.describe("uplink_in_flight", "gauge", "Records sent and not yet acknowledged")
    m.describe("uplink_oldest_age_seconds", "gauge", "Age of the oldest unacknowledged record")
    m.describe("uplink_dropped_total", "counter", "Records dropped by the uplink, by reason")
    for key, text in UPLINK_COUNTERS.items():
        m.describe(f"uplink_{key}_total", "counter", text)
    for key, text in QUEUE_GAUGES.items():
        m.describe(f"queue_{key}", "gauge", f"{text}, by stream")
    for key, (kind, text) in RULE_FAMILIES.items():
        m.describe(f"rule_{key}", kind, f"{text}, by rule")
    m.describe("rule_writes_total", "counter", "Device writes requested by rules, by rule")
    m.describe("rule_reloads_total", "counter", "Rule reloads by outcome (applied/rejected)")
    for key, text in MODEL_COUNTERS.items():
        m.describe(f"model_{key}_total", "counter", f"{text}, by model")
    m.describe("model_running", "gauge", "1 while the model runs, by model")
    m.describe("model_queued", "gauge", "Windows waiting for the model, by model")
    m.histogram_source("model_latency_seconds", "Inference latency per invoke (features "
                       "included), by model", lambda: model_latency(rt))  # fmt: skip
    m.describe("model_latency_p50_seconds", "gauge", "Median inference latency, by model")
    m.describe("model_latency_p99_seconds", "gauge", "99th percentile inference latency, by model")
    m.help_for = _default_help
    m.add_collector(lambda: collect(rt))


def model_latency(rt: Runtime) -> list[HistogramRow]:
    if rt.models is None:
        return []
    return [
        ((("model", name),), LATENCY_BUCKETS, list(slot.stats.latency_counts),
         slot.stats.latency_sum, sum(slot.stats.latency_counts))
        for name, slot in rt.models.slots.items()
    ]  # fmt: skip


def _default_help(name: str) -> str:
    if name.startswith("device_"):
        stat = name.removeprefix("device_").removesuffix("_total").removesuffix("_seconds")
        return f"Driver statistic {stat} per device (see the driver's README)"
    return name.replace("_", " ")


UPLINK_COUNTERS = {
    "submitted": "Records handed to the uplink",
    "committed": "Records committed to the durable queue",
    "sent": "Records sent to the cloud (retransmissions included)",
    "acks": "Acknowledgements received from the cloud",
    "retransmits": "Records sent again after a reconnect or timeout",
    "nacks": "Negative acknowledgements received",
    "reconnects": "Reconnections of the uplink socket",
    "drops_sent": "Drop notices sent upstream",
    "commands": "Downlink commands received",
}
QUEUE_GAUGES = {
    "depth": "Records in the durable queue",
    "acked_hw": "Highest sequence number the cloud acknowledged",
    "next_seq": "Sequence number of the next record",
    "bytes": "Payload bytes in the durable queue",
}
RULE_FAMILIES = {
    "evaluations_total": ("counter", "Rule evaluations"),
    "firings_total": ("counter", "Rule firings (episodes with actions)"),
    "clears_total": ("counter", "Rule clears"),
    "active": ("gauge", "1 while the rule's episode is active"),
    "suppressed_total": ("counter", "Episodes suppressed by the cooldown"),
    "writes_refused_total": ("counter", "Rule writes refused by the rate limit"),
    "eval_seconds_total": ("counter", "Time spent evaluating the rule (1 in 16 timed, scaled)"),
}
MODEL_COUNTERS = {
    "windows": "Input windows completed",
    "invocations": "Model invocations",
    "inferred": "Windows inferred",
    "dropped": "Windows dropped (the model was busy)",
    "skipped": "Windows skipped (unknown inputs)",
    "errors": "Model invocations that failed",
    "swaps": "Model files swapped in at run time",
}
#: Device stats that are levels, not counts (every other number a driver reports is a count).
DEVICE_GAUGES = frozenset({"connected", "online", "discovered_nodes", "sessions"})


def device_family(key: str) -> tuple[str, float]:
    """Family name and unit factor of a driver stat: counts get ``_total``, ms become seconds."""
    if key.endswith("_ms"):
        return f"device_{key[:-3]}_seconds", 1e-3
    if key in DEVICE_GAUGES:
        return f"device_{key}", 1.0
    return f"device_{key}_total", 1.0


def collect(rt: Runtime) -> list[tuple[str, Labels, float]]:
    out: list[tuple[str, Labels, float]] = [
        ("samples_per_second", (), rt.rate.rate),
        ("build_info", build_info_labels(), 1.0),
    ]
    up: dict[str, Any] = rt.uplink.stats()
    out.append(("uplink_connected", (), 1.0 if up.get("link") == "connected" else 0.0))
    for key in UPLINK_COUNTERS:
        if isinstance(up.get(key), int | float):
            out.append((f"uplink_{key}_total", (), float(up[key])))
    if isinstance(up.get("in_flight"), int | float):
        out.append(("uplink_in_flight", (), float(up["in_flight"])))
    if isinstance(up.get("oldest_age_s"), int | float):
        out.append(("uplink_oldest_age_seconds", (), float(up["oldest_age_s"])))
    for reason, n in (up.get("dropped_by") or {}).items():
        out.append(("uplink_dropped_total", (("reason", reason),), float(n)))
    for stream, st in (up.get("streams") or {}).items():
        for key in QUEUE_GAUGES:
            if isinstance(st.get(key), int | float):
                out.append((f"queue_{key}", (("stream", stream),), float(st[key])))
    for name, dev in rt.devices.items():
        for key, value in dev.stats().items():
            if isinstance(value, bool | int | float):
                family, factor = device_family(key)
                out.append((family, (("device", name),), float(value) * factor))
    for rule, st in rt.rules.stats().items():
        for key, value in st.items():
            family = "eval_seconds_total" if key == "eval_time_s" else (
                key if key == "active" else f"{key}_total")  # fmt: skip
            out.append((f"rule_{family}", (("rule", rule),), float(value)))
    if rt.models is not None:
        for name, labels, value in collect_model_metrics(rt.models):
            key = name.removeprefix("model_")
            if key.endswith("_s"):
                name = f"model_{key[:-2]}_seconds"
            elif key in MODEL_COUNTERS:
                name = f"model_{key}_total"
            out.append((name, labels, value))
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
