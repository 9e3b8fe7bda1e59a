"""Regenerate the example models in examples/models/ reproducibly, without TensorFlow.

    python tools/make_models.py [--out examples/models] [--check]

Both models learn from the simulated motor of the demo (``gateway.drivers.sim.MotorModel``),
polled every 100 ms with jitter and resampled the way the gateway does it, so they see at the
edge exactly what they were made from:

* ``bearing_ae.tflite`` (float32): an autoencoder over 16 log FFT band energies of a 12.8 s window
  (128 samples at 10 Hz): 16 -> 6 (relu) -> 16, and the graph itself computes the anomaly score,
  the mean squared reconstruction error (SQUARED_DIFFERENCE + MEAN). Trained with Adam on normal
  operation (including the load excursions, which are not bearing faults).
* ``motor_state_cnn.tflite`` (int8, full-integer): a 1-D CNN classifier over the raw window
  (``(x - 4) * 0.5``): RESHAPE -> CONV_2D 1x5 with 4 fixed filters (level, negative level, slope,
  curvature; relu) -> MEAN (global average pooling) -> FULLY_CONNECTED 4 -> 3 -> SOFTMAX, classes
  normal / overload / bearing. The dense head is trained (multinomial logistic regression), then
  everything is quantised to int8 with per-channel conv weights and calibrated activations.

Each model comes with ``<name>.ref.json``: reference windows, the outputs an independent numpy
forward pass computes for them (float64 math; for the int8 model with every activation rounded
to its int8 grid), the tolerance, and for the autoencoder the alarm threshold. The script checks
that LiteRT reproduces them before writing anything. Weights are rounded to a 2^-12 grid so the
bytes are the same on every machine; ``--check`` regenerates in memory and fails if any shipped
file differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from tflite_writer import (  # noqa: E402
    OP,
    Graph,
    Quant,
    conv_options,
    fc_options,
    mean_options,
    reshape_options,
    softmax_options,
)  # fmt: skip

from gateway.config import FeatureConfig, WindowConfig  # noqa: E402
from gateway.drivers.sim.signals import MotorModel  # noqa: E402
from gateway.infer.features import extract, resample  # noqa: E402

WINDOW = WindowConfig(length=128, hop=32, rate=10.0)
AE_FEATURES = FeatureConfig(kind="fft", bands=16, log=True)
CNN_FEATURES = FeatureConfig(kind="raw", offset=4.0, scale=0.5)
CLASSES = ("normal", "overload", "bearing")
GRID = 2.0**-12


def _q(w: np.ndarray) -> np.ndarray:
    """Round to the 2^-12 grid: float32-exact and immune to last-bit BLAS differences."""
    return (np.round(np.asarray(w, np.float64) / GRID) * GRID).astype(np.float32)


# --- data ---------------------------------------------------------------------------------------


def simulate(
    seed: int, seconds: float, fault_at: float | None
) -> tuple[list[np.ndarray], list[int], list[bool]]:
    """Windows of polled motor vibration, their labels (0/1/2; -1 = mixed), any fault inside."""
    motor = MotorModel(seed=seed, excursion_at=20.0, excursion_every=45.0, excursion_len=8.0,
                       bearing_fault_at=fault_at, bearing_fault_every=90.0,
                       bearing_fault_len=30.0)  # fmt: skip
    jitter = np.random.default_rng(seed)
    ts, vs, states = [], [], []
    t = 0.0
    while t < seconds:
        motor.update(t)
        ts.append(t)
        vs.append(motor.values()["vibration"])
        states.append(2 if motor.bearing_fault() else (1 if motor.in_excursion() else 0))
        t += 0.1 + float(jitter.uniform(-0.03, 0.03))
    tsa, vsa, sta = np.array(ts), np.array(vs), np.array(states)
    windows, labels, faulty = [], [], []
    span = WINDOW.length / WINDOW.rate  # type: ignore[operator]
    t_end = span
    while t_end < tsa[-1]:
        w = resample(tsa, vsa, t_end, WINDOW)
        if w is not None:
            inside = sta[(tsa > t_end - span) & (tsa <= t_end)]
            windows.append(w)
            labels.append(int(inside[0]) if (inside == inside[0]).all() else -1)
            faulty.append(bool((inside == 2).any()))
        t_end += WINDOW.hop / WINDOW.rate  # type: ignore[operator]
    return windows, labels, faulty


# --- autoencoder --------------------------------------------------------------------------------


def ae_forward(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    h = np.maximum(x @ p["w1"].T.astype(np.float64) + p["b1"], 0.0)
    r = h @ p["w2"].T.astype(np.float64) + p["b2"]
    return ((x - r) ** 2).mean(axis=1)


def train_ae(x: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    mu = x.mean(axis=0)
    p = {"w1": rng.normal(0, 0.3, (6, 16)), "b1": np.zeros(6),
         "w2": rng.normal(0, 0.3, (16, 6)), "b2": mu.copy()}  # fmt: skip
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    for step in range(1, 3001):
        pre = x @ p["w1"].T + p["b1"]
        h = np.maximum(pre, 0.0)
        r = h @ p["w2"].T + p["b2"]
        d = 2.0 * (r - x) / x.size
        g = {"w2": d.T @ h, "b2": d.sum(0)}
        dh = (d @ p["w2"]) * (pre > 0)
        g["w1"], g["b1"] = dh.T @ x, dh.sum(0)
        for k in p:
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
            p[k] -= 0.01 * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)
    return {k: _q(val) for k, val in p.items()}


def ae_model(p: dict[str, np.ndarray]) -> bytes:
    g = Graph()
    f32 = np.float32
    x = g.tensor("features", [1, 16], f32, signature=[-1, 16])
    w1 = g.tensor("enc/w", [6, 16], f32, data=p["w1"])
    b1 = g.tensor("enc/b", [6], f32, data=p["b1"])
    h = g.tensor("code", [1, 6], f32, signature=[-1, 6])
    w2 = g.tensor("dec/w", [16, 6], f32, data=p["w2"])
    b2 = g.tensor("dec/b", [16], f32, data=p["b2"])
    r = g.tensor("reconstruction", [1, 16], f32, signature=[-1, 16])
    sq = g.tensor("squared_error", [1, 16], f32, signature=[-1, 16])
    axis = g.tensor("axis", [1], np.int32, data=np.array([1], np.int32))
    score = g.tensor("score", [1], f32, signature=[-1])
    g.op(OP.FULLY_CONNECTED, [x, w1, b1], [h], *fc_options(relu=True))
    g.op(OP.FULLY_CONNECTED, [h, w2, b2], [r], *fc_options(relu=False))
    g.op(OP.SQUARED_DIFFERENCE, [x, r], [sq])
    g.op(OP.MEAN, [sq, axis], [score], *mean_options())
    return g.model([x], [score], "bearing_ae: vibration band-energy autoencoder (score = MSE)")


# --- int8 CNN classifier ------------------------------------------------------------------------

CONV = np.array([[0, 0, 1, 0, 0], [0, 0, -1, 0, 0], [0, 0, 1, -1, 0], [0, -0.5, 1, -0.5, 0]],
                np.float64)  # fmt: skip


def cnn_pooled(x: np.ndarray) -> np.ndarray:
    """``[B, 128]`` scaled windows -> ``[B, 4]`` pooled relu conv features (float64)."""
    cols = np.lib.stride_tricks.sliding_window_view(x, 5, axis=1)  # [B, 60, 5]
    return np.maximum(cols @ CONV.T, 0.0).mean(axis=1)


def train_head(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, b = np.zeros((3, 4)), np.zeros(3)
    onehot = np.eye(3)[y]
    for _ in range(4000):
        z = f @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        d = (p - onehot) / len(f)
        w -= 2.0 * (d.T @ f)
        b -= 2.0 * d.sum(0)
    return w, b


def _fq(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """Fake quantisation: round to the int8 grid of (scale, zero point) and back."""
    return (np.clip(np.rint(x / scale) + zp, -128, 127) - zp) * scale


class CnnInt8:
    """Quantisation parameters of the int8 CNN, calibrated on training windows."""

    def __init__(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> None:
        self.s_in, self.z_in = 8.0 / 255.0, 0  # features (x - 4) * 0.5 in [-4, 4]
        self.s_cw = np.abs(CONV).max(axis=1) / 127.0  # per output channel
        self.cw = np.rint(CONV / self.s_cw[:, None]).astype(np.int8)
        conv = np.maximum(np.lib.stride_tricks.sliding_window_view(x, 5, axis=1) @ CONV.T, 0.0)
        self.s_conv, self.z_conv = float(conv.max()) / 255.0, -128
        pooled = conv.mean(axis=1)
        self.s_pool, self.z_pool = float(pooled.max()) / 255.0, -128
        self.s_fw = float(np.abs(w).max()) / 127.0
        self.fw = np.rint(w / self.s_fw).astype(np.int8)
        self.fb = np.rint(b / (self.s_pool * self.s_fw)).astype(np.int32)
        logits = pooled @ (self.fw * self.s_fw).T + self.fb * self.s_pool * self.s_fw
        lim = float(np.abs(logits).max()) * 1.25
        self.s_logit, self.z_logit = 2 * lim / 255.0, 0
        self.s_out, self.z_out = 1.0 / 256.0, -128

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float64 math on the int8 grids: what the int8 kernels compute, to within a step."""
        xq = _fq(x, self.s_in, self.z_in)
        cw = self.cw * self.s_cw[:, None]
        cols = np.lib.stride_tricks.sliding_window_view(xq, 5, axis=1)
        conv = _fq(np.maximum(cols @ cw.T, 0.0), self.s_conv, self.z_conv)
        pooled = _fq(conv.mean(axis=1), self.s_pool, self.z_pool)
        logits = pooled @ (self.fw * self.s_fw).T + self.fb * (self.s_pool * self.s_fw)
        logits = _fq(logits, self.s_logit, self.z_logit)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return _fq(z / z.sum(axis=1, keepdims=True), self.s_out, self.z_out)

    def model(self) -> bytes:
        g, i8 = Graph(), np.int8
        x = g.tensor("window", [1, 128], i8, Quant([self.s_in], [self.z_in]), signature=[-1, 128])
        shape = g.tensor("shape", [4], np.int32, data=np.array([-1, 1, 128, 1], np.int32))
        x4 = g.tensor("window_nhwc", [1, 1, 128, 1], i8, Quant([self.s_in], [self.z_in]),
                      signature=[-1, 1, 128, 1])  # fmt: skip
        w = g.tensor("conv/w", [4, 1, 5, 1], i8, Quant(list(self.s_cw), [0] * 4, 0),
                     data=self.cw.reshape(4, 1, 5, 1))  # fmt: skip
        bq = Quant(list(self.s_cw * self.s_in), [0] * 4, 0)
        b = g.tensor("conv/b", [4], np.int32, bq, data=np.zeros(4, np.int32))
        c = g.tensor("conv", [1, 1, 124, 4], i8, Quant([self.s_conv], [self.z_conv]),
                     signature=[-1, 1, 124, 4])  # fmt: skip
        axes = g.tensor("axes", [2], np.int32, data=np.array([1, 2], np.int32))
        pool = g.tensor("pool", [1, 4], i8, Quant([self.s_pool], [self.z_pool]),
                        signature=[-1, 4])  # fmt: skip
        fw = g.tensor("head/w", [3, 4], i8, Quant([self.s_fw], [0]), data=self.fw)
        fb = g.tensor("head/b", [3], np.int32, Quant([self.s_pool * self.s_fw], [0]),
                      data=self.fb)  # fmt: skip
        lg = g.tensor("logits", [1, 3], i8, Quant([self.s_logit], [self.z_logit]),
                      signature=[-1, 3])  # fmt: skip
        out = g.tensor("probabilities", [1, 3], i8, Quant([self.s_out], [self.z_out]),
                       signature=[-1, 3])  # fmt: skip
        g.op(OP.RESHAPE, [x, shape], [x4], *reshape_options([-1, 1, 128, 1]))
        g.op(OP.CONV_2D, [x4, w, b], [c], *conv_options(relu=True))
        g.op(OP.MEAN, [c, axes], [pool], *mean_options())
        g.op(OP.FULLY_CONNECTED, [pool, fw, fb], [lg], *fc_options(relu=False))
        g.op(OP.SOFTMAX, [lg], [out], *softmax_options())
        return g.model([x], [out], "motor_state_cnn: int8 1-D CNN, normal/overload/bearing")


# --- build, verify, write -----------------------------------------------------------------------


def _pick(windows: list[np.ndarray], labels: list[int], per_class: int) -> np.ndarray:
    chosen: list[np.ndarray] = []
    for c in range(3):
        idx = [i for i, y in enumerate(labels) if y == c][::7][:per_class]
        chosen += [windows[i] for i in idx]
    return np.round(np.array(chosen), 6)


def _ref_json(windows: np.ndarray, outputs: list[np.ndarray], atol: float, **meta: object) -> bytes:
    doc = {**meta, "atol": atol,
           "windows": [[float(f"{v:.6f}") for v in w] for w in windows],
           "outputs": [[[float(f"{v:.7g}") for v in row] for row in o] for o in outputs]}  # fmt: skip
    return (json.dumps(doc, indent=1) + "\n").encode()


def build() -> dict[str, bytes]:
    train_w, train_y, train_f = simulate(seed=11, seconds=3600.0, fault_at=300.0)
    test_w, test_y, test_f = simulate(seed=23, seconds=1800.0, fault_at=200.0)
    xs, ys = np.array(train_w), np.array(train_y)
    feats = extract(xs, AE_FEATURES).astype(np.float64)
    p = train_ae(feats[~np.array(train_f)])  # normal operation: load excursions included
    tx, ty = np.array(test_w), np.array(test_y)
    scores = ae_forward(extract(tx, AE_FEATURES).astype(np.float64), p)
    normal, fault = scores[~np.array(test_f)], scores[ty == 2]
    threshold = float(f"{np.quantile(normal, 0.999) * 1.2:.3g}")
    caught = float((fault > threshold).mean())
    if caught < 0.75:
        raise SystemExit(f"autoencoder catches only {caught:.0%} of fault windows above its "
                         f"threshold {threshold}")  # fmt: skip
    ref_ae = _pick(test_w, test_y, 3)
    ae_out = ae_forward(extract(ref_ae, AE_FEATURES).astype(np.float64), p)

    sel = ys >= 0
    xn = extract(xs[sel], CNN_FEATURES).astype(np.float64)
    w, b = train_head(cnn_pooled(xn), ys[sel])
    q = CnnInt8(xn, w, b)
    xt = extract(tx[ty >= 0], CNN_FEATURES).astype(np.float64)
    accuracy = float((q.forward(xt).argmax(axis=1) == ty[ty >= 0]).mean())
    if accuracy < 0.9:
        raise SystemExit(f"classifier accuracy {accuracy:.3f} < 0.9")
    ref_cnn = _pick(test_w, test_y, 3)
    cnn_out = q.forward(extract(ref_cnn, CNN_FEATURES).astype(np.float64))
    return {
        "bearing_ae.tflite": ae_model(p),
        "bearing_ae.ref.json": _ref_json(
            ref_ae, [ae_out[:, None]], 1e-5, model="bearing_ae", threshold=threshold,
            normal_p999=float(f"{np.quantile(normal, 0.999):.4g}"),
            fault_median=float(f"{np.median(fault):.4g}"), fault_windows_caught=round(caught, 3)),
        "motor_state_cnn.tflite": q.model(),
        "motor_state_cnn.ref.json": _ref_json(
            ref_cnn, [cnn_out], 3.0 / 256.0, model="motor_state_cnn", classes=list(CLASSES),
            test_accuracy=round(accuracy, 4)),
    }  # fmt: skip


def verify(files: dict[str, bytes]) -> None:
    """LiteRT must reproduce every reference (what the gateway's self-test checks too)."""
    from ai_edge_litert.interpreter import Interpreter

    for name, feats in (("bearing_ae", AE_FEATURES), ("motor_state_cnn", CNN_FEATURES)):
        ref = json.loads(files[f"{name}.ref.json"])
        x = extract(np.array(ref["windows"]), feats)
        it = Interpreter(model_content=files[f"{name}.tflite"], num_threads=1)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        it.resize_tensor_input(inp["index"], [len(x), x.shape[1]])
        it.allocate_tensors()
        s, z = inp["quantization"]
        it.set_tensor(inp["index"], x if not s else
                      np.clip(np.rint(x / s) + z, -128, 127).astype(np.int8))  # fmt: skip
        it.invoke()
        y = it.get_tensor(out["index"]).reshape(len(x), -1).astype(np.float64)
        s, z = out["quantization"]
        if s:
            y = (y - z) * s
        err = float(np.abs(y - np.array(ref["outputs"][0])).max())
        if err > ref["atol"]:
            raise SystemExit(f"{name}: LiteRT differs from the numpy reference by {err:.3g}")
        print(f"{name}: LiteRT matches the reference within {err:.2g} (atol {ref['atol']:.3g})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "examples" / "models"))
    ap.add_argument("--check", action="store_true", help="fail if shipped files differ")
    args = ap.parse_args()
    files = build()
    verify(files)
    out = Path(args.out)
    differ = []
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        path = out / name
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                differ.append(name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        print(f"{digest}  {path}")
    if differ:
        print("differs from the shipped file: " + ", ".join(differ), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
