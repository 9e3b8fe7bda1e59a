"""``/metrics`` follows the Prometheus conventions, as Prometheus's own parser reads it: every
family has ``# HELP`` and ``# TYPE``, counters end ``_total``, durations are seconds, latency is
a histogram, and the ``process_*`` and ``build_info`` families every exporter has are there."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from api_support import api_gateway, http
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__


def _scrape(tmp_path: Path) -> str:
    async def main() -> str:
        async with api_gateway(tmp_path) as gw:
            await gw.get("/api/devices")  # one API request: the histogram has a series
            await gw.post("/api/rules/reload", user=None)  # one refusal
            answer = await http(gw.port, "GET", "/metrics")
            assert answer.status == 200
            assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
            return answer.body.decode()

    return asyncio.run(asyncio.wait_for(main(), 60))


def test_metrics_follow_prometheus_conventions(tmp_path: Path) -> None:
    text = _scrape(tmp_path)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helped = dict(re.findall(r"^# HELP (\S+) (.+)$", text, re.M))
    assert set(typed) == set(helped), f"TYPE without HELP: {set(typed) ^ set(helped)}"
    problems = []
    for name, fam in families.items():
        if fam.type == "unknown":
            problems.append(f"{name}: no # TYPE")
        if not fam.documentation.strip():
            problems.append(f"{name}: empty # HELP")
        if re.search(r"_(ms|s|us|millis|msec)$", name) or "_ms_" in name:
            problems.append(f"{name}: durations are in seconds (suffix _seconds)")
        for s in fam.samples:
            if fam.type == "counter" and not s.name.endswith(("_total", "_created")):
                problems.append(f"{s.name}: a counter without _total")
            if fam.type == "gauge" and s.name.endswith("_total"):
                problems.append(f"{s.name}: a gauge named like a counter")
    assert not problems, "\n".join(problems)

    hist = families["gateway_api_request_duration_seconds"]
    assert hist.type == "histogram"
    buckets = [s for s in hist.samples if s.name.endswith("_bucket")]
    assert buckets and buckets[-1].labels["le"] == "+Inf"
    count = next(s.value for s in hist.samples if s.name.endswith("_count"))
    assert count >= 2 and buckets[-1].value == count

    model = families["gateway_model_latency_seconds"]
    assert model.type == "histogram"
    assert {s.labels.get("model") for s in model.samples} == {"bearing_ae", "motor_state"}

    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds"):  # fmt: skip
        assert name in families, f"{name} missing"
    assert families["process_resident_memory_bytes"].samples[0].value > 1e6
    info = families["gateway_build_info"].samples[0]
    assert info.value == 1 and info.labels["version"] == __version__
    refusals = families["gateway_api_refusals"].samples
    assert any(s.labels == {"reason": "unauthenticated"} and s.value >= 1 for s in refusals)
    assert families["gateway_device_requests"].type == "counter"  # was a gauge once
    assert "gateway_device_last_rtt_seconds" in families
