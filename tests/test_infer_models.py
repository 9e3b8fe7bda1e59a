"""Loaded models with the real LiteRT interpreter: parity, int8, bad files, self-test, swap."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from infer_support import MODELS, ROOT, demo_config, demo_model

from gateway.config import ConfigError, FeatureConfig, load_config_text
from gateway.core.model import Quality, SampleBatch
from gateway.core.runtime import build_point_table
from gateway.infer import backend
from gateway.infer.model import LoadedModel, ModelError, dequantize, load_reference, quantize
from gateway.infer.runner import ModelRunner


@pytest.mark.parametrize("name", ["bearing_ae", "motor_state"])
def test_outputs_match_the_shipped_reference(name: str) -> None:
    cfg = demo_model(name)
    model = LoadedModel.load(cfg)
    ref = load_reference(cfg.reference or "")
    got = model.run(np.asarray(_features(cfg, ref.windows)))
    assert len(got) == len(ref.outputs)
    for want, y in zip(ref.outputs, got, strict=True):
        np.testing.assert_allclose(y, want, atol=ref.atol, rtol=0)
    assert model.self_test().startswith("self-test passed")


def _features(cfg, windows):  # noqa: ANN001, ANN202
    from gateway.infer.features import extract

    return extract(windows, cfg.features)


def test_int8_quantisation_parameters_come_from_the_model_and_apply_both_ways() -> None:
    model = LoadedModel.load(demo_model("motor_state"))
    t_in, t_out = model.input, model.output_infos[0]
    assert t_in.dtype is np.int8 and t_in.scale == pytest.approx(8 / 255) and t_in.zero_point == 0
    assert t_out.scale == pytest.approx(1 / 256) and t_out.zero_point == -128
    x = np.linspace(-4.0, 4.0, 1001)
    back = dequantize(quantize(x, t_in), t_in)
    assert np.abs(back - x).max() <= t_in.scale / 2 + 1e-12
    assert quantize(np.array([100.0, -100.0]), t_in).tolist() == [127, -128]  # clipped
    ref = load_reference(demo_model("motor_state").reference or "")
    probs = model.run(_features(model.config, ref.windows))[0]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=3 / 256)
    # Every probability sits on the output's int8 grid: the runtime dequantized it.
    steps = probs / t_out.scale
    assert np.allclose(steps, np.round(steps), atol=1e-9)


def test_batched_invoke_equals_window_by_window() -> None:
    model = LoadedModel.load(demo_model("bearing_ae"))
    ref = load_reference(model.config.reference or "")
    batch = model.infer(ref.windows)
    single = np.concatenate([model.infer(ref.windows[i : i + 1]) for i in range(len(ref.windows))])
    np.testing.assert_allclose(batch, single, rtol=1e-6)


def test_wrong_sha256_is_rejected_with_both_hashes() -> None:
    cfg = demo_model("bearing_ae", sha256="0" * 64)
    with pytest.raises(ModelError, match=r"sha256 is [0-9a-f]{64}, the config expects 0{64}"):
        LoadedModel.load(cfg)


def test_corrupt_file_is_rejected_clearly(tmp_path: Path) -> None:
    data = bytearray((MODELS / "bearing_ae.tflite").read_bytes())
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(data[: len(data) // 3]))
    cfg = demo_model(
        "bearing_ae", file=str(bad), sha256=hashlib.sha256(bad.read_bytes()).hexdigest()
    )
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        LoadedModel.load(cfg)
    text = tmp_path / "text.tflite"
    text.write_bytes(b"this is not a flatbuffer at all" * 10)
    cfg = dataclasses.replace(
        cfg, file=str(text), sha256=hashlib.sha256(text.read_bytes()).hexdigest()
    )
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        LoadedModel.load(cfg)


def test_wrong_shape_for_the_configured_features_is_rejected() -> None:
    cfg = demo_model("bearing_ae", features=FeatureConfig(kind="fft", bands=8, log=True))
    with pytest.raises(ModelError, match=r"input tensor shape \[1, 16\] holds 16 values per window, "
                       r"but features 'fft' make 8 \(8 bands x 1 inputs\)"):  # fmt: skip
        LoadedModel.load(cfg)
    out = dataclasses.replace(demo_model("motor_state").outputs[1], element=7)
    cfg = demo_model("motor_state", outputs=(out,))
    with pytest.raises(ModelError, match="reads element 7 of output tensor 0, which has 3 values"):
        LoadedModel.load(cfg)


def _runner(models, problems):  # noqa: ANN001, ANN202
    config = dataclasses.replace(demo_config(), models=tuple(models))
    points = build_point_table(config)
    out: list[SampleBatch] = []
    runner = ModelRunner(
        config.models, points, out.append, lambda m, msg: problems.append((m, msg))
    )
    return runner, points, out


def test_self_test_mismatch_disables_only_that_model(tmp_path: Path) -> None:
    ref = json.loads((MODELS / "bearing_ae.ref.json").read_text())
    ref["outputs"][0][2][0] += 0.01
    tampered = tmp_path / "ref.json"
    tampered.write_text(json.dumps(ref))
    problems: list[tuple[str, str]] = []
    runner, _, _ = _runner(
        [demo_model("bearing_ae", reference=str(tampered)), demo_model("motor_state")], problems
    )
    runner.start(thread=False)
    assert runner.slots["bearing_ae"].state == "disabled"
    assert runner.slots["motor_state"].running
    assert problems and problems[0][0] == "bearing_ae"
    assert "self-test failed: output 0 of reference window 2 differs by 0.01" in problems[0][1]


def test_missing_runtime_disables_models_and_names_the_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backend, "_cached", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    problems: list[tuple[str, str]] = []
    runner, _, _ = _runner([demo_model("bearing_ae")], problems)
    runner.start(thread=False)
    assert runner.slots["bearing_ae"].state == "disabled"
    ((who, message),) = problems
    assert "models 'bearing_ae' (" in message and "demo.yaml:" in message
    assert "pip install 'edge-gateway[ml]'" in message


def test_legacy_tflite_runtime_is_refused_under_numpy_2(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = object  # type: ignore[attr-defined]
    fake.load_delegate = None  # type: ignore[attr-defined]
    monkeypatch.setattr(backend, "_cached", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    monkeypatch.setattr(backend, "_numpy_major", lambda: 2)
    with pytest.raises(backend.RuntimeUnavailable, match="numpy is .*ai-edge-litert"):
        backend.load_backend()


def test_edgetpu_delegate_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    model = LoadedModel.load(demo_model("bearing_ae", delegate="edgetpu"))
    assert model.delegate == "cpu"
    assert "edgetpu delegate unavailable" in caplog.text
    assert model.self_test().startswith("self-test passed")


def test_hot_swap_is_atomic_and_keeps_the_old_model_on_failure(tmp_path: Path) -> None:
    problems: list[tuple[str, str]] = []
    runner, _, _ = _runner([demo_model("bearing_ae")], problems)
    runner.start(thread=False)
    old = runner.slots["bearing_ae"].model
    bad = tmp_path / "new.tflite"
    bad.write_bytes((MODELS / "motor_state_cnn.tflite").read_bytes())  # a valid model, wrong shape
    with pytest.raises(ModelError, match="old model kept"):
        runner.swap("bearing_ae", str(bad), hashlib.sha256(bad.read_bytes()).hexdigest())
    assert runner.slots["bearing_ae"].model is old and problems
    with pytest.raises(ModelError, match="sha256"):
        runner.swap("bearing_ae", str(bad), "1" * 64)
    assert runner.slots["bearing_ae"].model is old
    good = tmp_path / "v2.tflite"
    shutil.copy(MODELS / "bearing_ae.tflite", good)
    summary = runner.swap("bearing_ae", str(good), demo_model("bearing_ae").sha256)
    assert "self-test passed" in summary
    assert runner.slots["bearing_ae"].model is not old
    assert runner.stats()["bearing_ae"]["swaps"] == 1
    assert runner.stats()["bearing_ae"]["file"] == str(good)


def test_full_queue_drops_the_oldest_windows_and_counts_them() -> None:
    cfg = demo_model("bearing_ae", queue=2, batch=4)
    cfg = dataclasses.replace(cfg, window=dataclasses.replace(cfg.window, capacity=1000))
    runner, points, out = _runner([cfg], [])
    runner.start(thread=False)
    pid = points.id_of("motor1.vibration")
    t = 1000.0 + np.arange(600) * 0.1  # 60 s at 10 Hz in one batch
    v = 4.0 + 0.25 * np.random.default_rng(1).standard_normal(len(t))
    batch = SampleBatch(np.full(len(t), pid, np.uint32), t, v, np.zeros(len(t), np.uint8))
    points.ingest(batch)
    runner.on_batch(batch)
    st = runner.stats()["bearing_ae"]
    expected = int((59.9 - 12.7) / 3.2 + 1e-9) + 1  # window ends 12.7 s, 15.9 s, ... <= 59.9 s
    assert st["windows"] == expected and st["dropped"] == expected - 2 and st["queued"] == 2
    assert runner.run_pending() == 2
    (res,) = out
    assert len(res) == 2 and (res.quality == Quality.GOOD).all()
    assert res.ts[1] - res.ts[0] == pytest.approx(3.2)
    assert res.ts[-1] <= t[-1] and runner.stats()["bearing_ae"]["invocations"] == 1


def test_config_errors_name_the_model_entry(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(b"x")
    text = """
gateway: {id: gw}
uplink: {insecure: true}
devices:
  - name: motor1
    points: [{name: vibration, address: 1, type: float32}]
models:
  - name: motor1
    file: m.tflite
    sha256: %s
    inputs: [motor1.vibraton]
    window: {length: 8, hop: 9, rate: 10}
    features: {kind: stats, stats: [mean, kurt]}
    outputs: [{name: score}]
  - name: ae
    file: missing.tflite
    sha256: ABC
    inputs: [motor1.vibration]
    window: {length: 8, hop: 4}
    outputs: [{name: score}, {name: score}]
""" % ("a" * 64)  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_config_text(text, str(tmp_path / "gw.yaml"))
    msgs = "\n".join(str(i) for i in err.value.issues)
    assert "gw.yaml:8:11: models[0].name: 'motor1' is a device name" in msgs
    assert (
        "models[0].inputs[0]: unknown point 'motor1.vibraton' (did you mean 'motor1.vibration'?)"
        in msgs
    )
    assert "models[0].window.hop: must be <= length (8)" in msgs
    assert (
        "models[0].features.stats[1]: unknown statistic 'kurt' (did you mean 'kurtosis'?)" in msgs
    )
    assert "models[1].file: model file not found" in msgs
    assert "models[1].sha256: expected 64 lowercase hex digits" in msgs
    assert "models[1].outputs[1].name: duplicate output 'score'" in msgs


def test_models_test_command_prints_scores_over_a_recording(tmp_path: Path) -> None:
    from infer_support import motor_recording

    ts, vs = motor_recording(60.0, fault_at=30.0)
    data = tmp_path / "rec.csv"
    data.write_text(
        "ts,point,value\n"
        + "".join(f"{t:.3f},motor1.vibration,{v:.4f}\n" for t, v in zip(ts, vs, strict=True))
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "models", "test", "bearing_ae", "--data", str(data),
         "--config", str(ROOT / "examples" / "demo.yaml"), "--plot"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(",") for line in proc.stdout.splitlines() if line.count(",") == 2]
    scores = [(float(t) - ts[0], float(v)) for t, name, v in rows if name == "bearing_ae.score"]
    assert len(scores) >= 10
    threshold = json.loads((MODELS / "bearing_ae.ref.json").read_text())["threshold"]
    assert max(v for t, v in scores if t < 30.0) < threshold
    assert max(v for t, v in scores if t > 45.0) > threshold
    assert "bearing_ae.score" in proc.stdout.splitlines()[-1]


def test_tools_script_regenerates_the_shipped_models_byte_for_byte() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_models.py"), "--check"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = demo_config()
    for m in cfg.models:
        assert hashlib.sha256(Path(m.file).read_bytes()).hexdigest() == m.sha256
