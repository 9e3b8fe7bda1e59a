"""Window assembly from irregular samples and the feature extractors (no interpreter needed)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from infer_support import MODELS, demo_config, demo_model

from gateway.config import FeatureConfig, WindowConfig
from gateway.core.model import SampleBatch
from gateway.core.points import PointTable
from gateway.core.runtime import Runtime, build_point_table
from gateway.impl import ringbuf
from gateway.infer.features import extract, grid, resample

W = WindowConfig(length=32, hop=8, rate=10.0)


def test_irregular_samples_of_a_linear_signal_resample_exactly() -> None:
    rng = np.random.default_rng(4)
    ts = np.cumsum(0.1 + rng.uniform(-0.04, 0.04, 100))
    vals = 3.0 * ts - 1.0
    t_end = float(ts[80])
    w = resample(ts, vals, t_end, W)
    assert w is not None
    np.testing.assert_allclose(w, 3.0 * grid(t_end, W) - 1.0, atol=1e-12)
    assert grid(t_end, W)[-1] == t_end and np.allclose(np.diff(grid(t_end, W)), 0.1)


def test_windows_with_gaps_or_without_history_are_not_invented() -> None:
    ts = np.arange(100) * 0.1
    vals = np.sin(ts)
    assert resample(ts, vals, 2.0, W) is None  # starts before the first sample
    gap = np.concatenate([ts[:40], ts[60:]])  # 2 s hole; default limit 10 periods = 1 s
    assert resample(gap, np.sin(gap), 7.0, W) is None
    assert resample(gap, np.sin(gap), 7.0, dataclasses.replace(W, max_gap=3.0)) is not None
    assert resample(ts, vals, 9.9, W) is not None
    assert resample(ts, vals, 10.5, W) is None  # no sample at or after the end yet


def test_runner_cuts_resampled_windows_at_the_hop_from_irregular_polls() -> None:
    from gateway.infer.runner import ModelRunner

    config = dataclasses.replace(demo_config(), models=(demo_model("bearing_ae"),))
    points = build_point_table(config)
    runner = ModelRunner(config.models, points, lambda b: None)
    slot = runner.slots["bearing_ae"]
    slot.state = "running"  # cut windows without loading the interpreter
    pid = np.array([points.id_of("motor1.vibration")], np.uint32)
    rng = np.random.default_rng(9)
    t = 5000.0
    for _ in range(400):  # ~40 s of jittered 10 Hz polls, one sample per batch
        t += 0.1 + float(rng.uniform(-0.03, 0.03))
        b = SampleBatch.uniform(pid, t, np.array([4.0 + rng.normal(0, 0.25)]))
        points.ingest(b)
        runner.on_batch(b)
    ends = [e for e, _ in slot.queue]
    assert len(ends) == len(slot.queue) == slot.stats.windows and slot.stats.skipped == 0
    assert np.allclose(np.diff(ends), 3.2)
    assert all(w.shape == (128, 1) for _, w in slot.queue)
    assert ends[-1] <= t and t - ends[-1] < 3.2 + 0.2


def test_raw_windows_take_the_newest_samples_every_hop() -> None:
    from gateway.infer.runner import ModelRunner

    cfg = demo_model("bearing_ae", window=WindowConfig(length=16, hop=8))
    config = dataclasses.replace(demo_config(), models=(cfg,))
    points = build_point_table(config)
    runner = ModelRunner(config.models, points, lambda b: None)
    slot = runner.slots["bearing_ae"]
    slot.state = "running"
    pid = points.id_of("motor1.vibration")
    n = 50
    batch = SampleBatch(np.full(n, pid, np.uint32), np.arange(n) * 0.001, np.arange(n, dtype=float),
                        np.zeros(n, np.uint8))  # fmt: skip
    points.ingest(batch)
    runner.on_batch(batch)
    windows = [w[:, 0] for _, w in slot.queue]
    # 50 samples, hop 8: windows end after every 8th sample (7, 15, ..., 47); 7 lacks history.
    assert [int(w[-1]) for w in windows] == [15, 23, 31, 39, 47]
    assert all(np.array_equal(w, np.arange(w[0], w[0] + 16)) for w in windows)
    assert slot.stats.skipped == 1 and slot.new_samples == 2


def test_fft_band_energies_sum_to_the_variance() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 0.7, (4, 128, 2))
    e = extract(x, FeatureConfig(kind="fft", bands=16)).reshape(4, 2, 16)
    np.testing.assert_allclose(e.sum(axis=2), x.var(axis=1), rtol=1e-6)
    tone = np.sin(2 * np.pi * 20 * np.arange(128) / 128)[None, :, None]  # bin 20 of 64 -> band 5
    e = extract(tone, FeatureConfig(kind="fft", bands=16))[0]
    assert int(np.argmax(e)) == 4 and e[4] == pytest.approx(0.5, rel=1e-5)


def test_window_stats_match_the_ring_buffer_statistics() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 2.0, 200)
    names = ("mean", "std", "rms", "min", "max", "p2p", "crest")
    got = extract(x[None, :, None], FeatureConfig(kind="stats", stats=names))[0]
    ring = ringbuf.RingBuffer(256)
    ring.extend(np.arange(200.0), x)
    want = ring.stats()
    np.testing.assert_allclose(got, [getattr(want, n) for n in names], rtol=1e-6)
    k = extract(x[None, :, None], FeatureConfig(kind="stats", stats=("kurtosis", "skew")))[0]
    assert 2.0 < k[0] < 4.0 and abs(k[1]) < 0.5


def test_output_points_exist_and_input_rings_grow_to_fit_the_window() -> None:
    points: PointTable = build_point_table(demo_config())
    assert "bearing_ae.score" in points and "motor_state.state" in points
    assert points.rings[points.id_of("motor1.vibration")].capacity >= 2 * 128
    assert points.rings[points.id_of("press1.temp")].capacity == demo_config().ring_capacity


def test_gateway_keeps_running_when_a_model_fails_its_self_test(tmp_path: Path) -> None:
    ref = json.loads((MODELS / "bearing_ae.ref.json").read_text())
    ref["outputs"][0][0][0] *= 2
    bad_ref = tmp_path / "ref.json"
    bad_ref.write_text(json.dumps(ref))
    base = demo_config()
    config = dataclasses.replace(
        base,
        metrics_listen=None,
        devices=tuple(dataclasses.replace(d, port=1) for d in base.devices),  # nothing listens
        rules=(),
        models=(demo_model("bearing_ae", reference=str(bad_ref)), demo_model("motor_state")),
        data_dir=str(tmp_path),
        uplink=dataclasses.replace(base.uplink, queue=str(tmp_path / "q.db"), insecure=True),
    )

    async def main() -> dict:
        runtime = Runtime(config)
        await runtime.start()
        try:
            return runtime.status()
        finally:
            await runtime.stop()

    status = asyncio.run(main())
    assert status["models"]["bearing_ae"]["state"] == "disabled"
    assert status["models"]["motor_state"]["state"] == "running"
    alarm = next(e for e in status["recent"] if e["kind"] == "alarm")
    assert alarm["rule"] == "model:bearing_ae" and alarm["state"] == "raised"
    assert "self-test failed" in alarm["message"]
