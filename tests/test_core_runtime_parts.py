from __future__ import annotations

import numpy as np

from gateway.core.deadband import DeadbandFilter
from gateway.core.metrics import Metrics, RateMeter
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable


def test_deadband_sends_changes_beyond_the_band_and_quality_changes() -> None:
    t = PointTable(ring_capacity=8)
    t.add("a.x", "a", "float32", deadband=0.5)
    t.add("a.y", "a", "float32")  # no deadband: every sample goes up
    f = DeadbandFilter(t)

    def run(x: float, y: float, q: Quality = Quality.GOOD) -> list[int]:
        b = SampleBatch(
            np.array([0, 1], np.uint32),
            np.array([0.0, 0.0]),
            np.array([x, y]),
            np.array([q, Quality.GOOD], np.uint8),
        )
        return f(b).point_ids.tolist()

    assert run(10.0, 1.0) == [0, 1]  # first value always goes
    assert run(10.4, 1.0) == [1]  # within the band
    assert run(10.6, 1.0) == [0, 1]  # beyond the band relative to the last sent 10.0
    assert run(10.6, 1.0, Quality.BAD) == [0, 1]  # a quality change goes without a value change
    assert run(np.nan, 1.0, Quality.BAD) == [0, 1]  # the value went away
    assert run(np.nan, 1.0, Quality.BAD) == [1]  # still bad: nothing new to say
    assert run(10.6, 1.0) == [0, 1]  # back to good


def test_metrics_render_prometheus_text() -> None:
    m = Metrics()
    m.describe("samples_total", "counter", "Samples received")
    m.inc("samples_total", 5)
    m.inc("alarms_total", labels=(("rule", 'a"b'), ("state", "raised")))
    m.add_collector(lambda: [("queue_depth", (("stream", "telemetry"),), 3.0)])
    text = m.render()
    assert "# TYPE gateway_samples_total counter\ngateway_samples_total 5.0" in text
    assert 'gateway_alarms_total{rule="a\\"b",state="raised"} 1.0' in text
    assert 'gateway_queue_depth{stream="telemetry"} 3.0' in text


def test_rate_meter_uses_the_injected_clock() -> None:
    now = [0.0]
    r = RateMeter(lambda: now[0], interval=2.0)
    r.add(100)
    now[0] = 2.0
    assert r.rate == 50.0
