"""TFLite inference: runtime overhead around invoke(), windows/s at 100 x 1 kHz, RSS of the ML extra.

1. Per-window overhead. Subject: ``LoadedModel.run`` + ``outputs`` (quantise, set, invoke, get,
   dequantise, output mapping) on the features of one window per invoke, and of 8 windows per
   invoke (the worker batches what has queued up); reference: the bare LiteRT loop
   ``set_tensor / invoke / get_tensor`` per window on the same features, same interpreter, same
   run. Medians of repeats. The example autoencoder's invoke takes about a microsecond, so one
   window per invoke pays a few microseconds of Python around it (printed as +us); the 1.3x target
   is checked on the batched path. The full per-window cost (features + run) is printed beside.
2. Throughput: 100 vibration channels at 1 kHz, 1 s windows (1000 samples), 50 % hop, FFT band
   features into the autoencoder, through the point table, the window cutter and the worker
   thread, fed 100 ms batches as fast as possible. Headroom = data seconds / CPU seconds of the
   process (target >= 5x on one core).
3. Added RSS: a fresh process that imports the gateway, then loads the interpreter and both
   example models; the difference (target <= 25 MB).

    .venv/bin/python bench/bench_infer.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import (  # noqa: E402
    FeatureConfig,
    ModelConfig,
    OutputConfig,
    WindowConfig,
    load_config,  # noqa: E402
)
from gateway.core.model import SampleBatch  # noqa: E402
from gateway.core.points import PointTable  # noqa: E402
from gateway.infer.features import extract  # noqa: E402
from gateway.infer.model import LoadedModel  # noqa: E402
from gateway.infer.runner import ModelRunner  # noqa: E402

DEMO = ROOT / "examples" / "demo.yaml"


def demo_models() -> dict[str, ModelConfig]:
    return {m.name: m for m in load_config(DEMO).models}


def overhead(cfg: ModelConfig, n: int, repeats: int) -> tuple[float, float, float, float]:
    """Median microseconds per window: bare loop, runtime one window per invoke, runtime with
    8 windows per invoke (what the worker does once windows queue up), runtime incl. features."""
    model = LoadedModel.load(cfg)
    rng = np.random.default_rng(0)
    windows = 4.0 + 0.25 * rng.standard_normal((n, cfg.window.length, 1))
    feats = extract(windows, cfg.features)
    it = model.interpreter
    inp, outs = model.input, model.output_infos
    xs = [f[None, :].reshape(1, *inp.shape[1:]) for f in feats]
    if inp.quantized:
        from gateway.infer.model import quantize

        xs = [quantize(x, inp) for x in xs]
    model.run(feats[:1])  # batch size 1 allocated for both sides
    bare, ours, batched, full = [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in xs:
            it.set_tensor(inp.index, x)
            it.invoke()
            for o in outs:
                it.get_tensor(o.index)
        bare.append((time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        for i in range(n):
            model.outputs(model.run(feats[i : i + 1]))
        ours.append((time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        for i in range(0, n, 8):
            model.outputs(model.run(feats[i : i + 8]))
        batched.append((time.perf_counter() - t0) / n)
        model.run(feats[:1])
        t0 = time.perf_counter()
        for i in range(n):
            model.infer(windows[i : i + 1])
        full.append((time.perf_counter() - t0) / n)
    return tuple(statistics.median(v) * 1e6 for v in (bare, ours, batched, full))  # type: ignore[return-value]


def throughput(seconds: float, channels: int = 100, rate: int = 1000) -> dict[str, float]:
    """Feed ``seconds`` of ``channels`` x ``rate`` Hz through the runner; CPU-time headroom."""
    ae = demo_models()["bearing_ae"]
    cfg = dataclasses.replace(
        ae,
        window=WindowConfig(length=rate, hop=rate // 2),  # raw: regularly sampled stream
        features=FeatureConfig(kind="fft", bands=16, log=True),
        outputs=(OutputConfig("score"),),
        batch=32,
        queue=1000,
    )
    points = PointTable(2 * rate)
    configs = []
    for c in range(channels):
        points.add(f"acc{c}.x", f"acc{c}", "float32")
        configs.append(dataclasses.replace(cfg, name=f"ae{c}", inputs=(f"acc{c}.x",)))
    for m in configs:
        points.add(f"{m.name}.score", m.name, "float32")
    delivered = [0]

    def deliver(batch: SampleBatch) -> None:
        delivered[0] += len(batch)

    runner = ModelRunner(tuple(configs), points, deliver)
    runner.start(None)
    step = rate // 10  # 100 ms batches
    ids = np.repeat(np.arange(channels, dtype=np.uint32), step)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((50, channels * step))
    q = np.zeros(channels * step, np.uint8)
    n_batches = int(seconds * 10)
    expected = channels * (int((n_batches * step - rate) // (rate // 2)) + 1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(n_batches):
        ts = np.tile(1000.0 + (k * step + np.arange(step)) / rate, channels)
        batch = SampleBatch(ids, ts, noise[k % 50], q)
        points.ingest(batch)
        runner.on_batch(batch)
    deadline = time.monotonic() + 60
    while delivered[0] < expected and time.monotonic() < deadline:
        time.sleep(0.001)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    runner.stop()
    st = runner.stats()
    dropped = sum(s["dropped"] for s in st.values())
    inferred = sum(s["inferred"] for s in st.values())
    invocations = sum(s["invocations"] for s in st.values())
    return {
        "windows": inferred, "expected": expected, "dropped": dropped, "cpu_s": cpu, "wall_s": wall,
        "windows_per_cpu_s": inferred / cpu, "needed_per_s": channels * rate / (rate // 2),
        "headroom": seconds / cpu, "windows_per_invoke": inferred / max(invocations, 1),
    }  # fmt: skip


_RSS = r"""
import sys, gc
sys.path.insert(0, {root!r})
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
import numpy, gateway.core.runtime  # the gateway without models
from gateway.config import load_config
cfg = load_config({demo!r})
gc.collect(); base = rss()
from gateway.infer.model import LoadedModel
models = [LoadedModel.load(m) for m in cfg.models]
for m in models: m.self_test()
gc.collect(); print(base, rss())
"""


def added_rss() -> tuple[float, float]:
    code = _RSS.format(root=str(ROOT), demo=str(DEMO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, after = map(float, out.stdout.split())
    return base, after


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, repeats, seconds = (500, 3, 3.0) if args.quick else (5000, 7, 20.0)
    ok = True
    for name, cfg in demo_models().items():
        bare, ours, batched, full = overhead(cfg, n, repeats)
        print(f"{name:12s} per window: bare set/invoke/get {bare:5.1f} us | runtime, 1 window per "
              f"invoke {ours:5.1f} us ({ours / bare:.2f}x, +{ours - bare:.1f} us) | runtime, 8 per "
              f"invoke {batched:5.1f} us ({batched / bare:.2f}x) | 1 window with features "
              f"{full:5.1f} us")  # fmt: skip
        if name == "bearing_ae":
            ok &= batched / bare <= 1.3
    t = throughput(seconds)
    print(f"100 ch x 1 kHz, 1 s windows, 50 % hop, {seconds:g} s of data: {t['windows']}/"
          f"{t['expected']} windows, {t['dropped']} dropped, {t['windows_per_cpu_s']:.0f} windows "
          f"per CPU second (needed {t['needed_per_s']:.0f}/s), {t['windows_per_invoke']:.1f} windows "
          f"per invoke, CPU {t['cpu_s']:.2f} s, wall {t['wall_s']:.2f} s: headroom "
          f"{t['headroom']:.1f}x on one core (target >= 5x)")  # fmt: skip
    ok &= t["headroom"] >= 5.0 and t["dropped"] == 0
    base, after = added_rss()
    print(f"RSS: gateway {base:.1f} MB, with LiteRT and both models loaded {after:.1f} MB: "
          f"added {after - base:.1f} MB (target <= 25 MB)")  # fmt: skip
    ok &= after - base <= 25.0
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
