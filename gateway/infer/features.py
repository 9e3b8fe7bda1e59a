"""Windows and features: what a model sees, cut from the point table's ring buffers.

Two kinds of window:

* **resampled** (``window.rate`` set): polled points arrive at irregular times, so each input is
  linearly interpolated onto a fixed grid of ``length`` instants ending at the window's end time.
  A window whose data has a gap longer than ``max_gap``, or that starts before the first sample,
  is skipped rather than invented.
* **raw** (``rate`` null): the newest ``length`` samples as they are, for regularly sampled
  streams (an accelerometer at 1 kHz).

Features are computed per channel on a batch ``[B, length, channels]`` in the worker thread:
the window itself, window statistics, or FFT band energies.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.config import FeatureConfig, WindowConfig

FloatArray = npt.NDArray[np.float64]


def grid(t_end: float, window: WindowConfig) -> FloatArray:
    """The ``length`` sample instants of a resampled window ending at ``t_end``."""
    assert window.rate is not None
    n = window.length
    return t_end - (n - 1 - np.arange(n, dtype=np.float64)) / window.rate


def resample(
    ts: FloatArray, values: FloatArray, t_end: float, window: WindowConfig
) -> FloatArray | None:
    """Interpolate one input onto the window grid; None when the data cannot cover it.

    ``ts`` must hold every sample from at least one sample at or before the grid's first
    instant through one at or after ``t_end`` (the caller reads them with ``RingBuffer.since``).
    """
    g = grid(t_end, window)
    if len(ts) < 2 or ts[0] > g[0] or ts[-1] < t_end:
        return None
    lo = max(int(np.searchsorted(ts, g[0], side="right")) - 1, 0)
    hi = int(np.searchsorted(ts, t_end, side="left")) + 1
    seg_t, seg_v = ts[lo:hi], values[lo:hi]
    if len(seg_t) > 1 and float(np.max(np.diff(seg_t))) > window.gap_limit:
        return None
    return np.interp(g, seg_t, seg_v)


def feature_length(features: FeatureConfig, length: int, channels: int) -> int:
    """Values per window the features produce (what the model's input tensor must hold)."""
    if features.kind == "raw":
        per = length
    elif features.kind == "stats":
        per = len(features.stats)
    else:
        per = features.bands
    return per * channels


def check_features(features: FeatureConfig, length: int) -> str | None:
    """Why these features cannot work on windows of ``length`` samples, or None."""
    if features.kind == "fft" and features.bands > length // 2:
        return (
            f"features.bands is {features.bands} but a window of {length} samples has only "
            f"{length // 2} frequency bins above DC; use at most {length // 2} bands"
        )
    return None


def extract(windows: npt.ArrayLike, features: FeatureConfig) -> npt.NDArray[np.float32]:
    """Feature vectors ``[B, F]`` (float32) of a batch of windows ``[B, length, channels]``.

    ``raw`` keeps the window's row-major order (time, then channel: Keras' channels-last
    layout); ``stats`` and ``fft`` concatenate the features of channel 0, then channel 1, ...
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim == 2:
        w = w[:, :, None]
    b = w.shape[0]
    if features.kind == "raw":
        x = w - w.mean(axis=1, keepdims=True) if features.center else w
        out = x.reshape(b, -1)
    elif features.kind == "stats":
        out = _stats(w, features.stats).reshape(b, -1)
    else:
        out = _band_energies(w, features.bands, features.log).reshape(b, -1)
    if features.offset != 0.0 or features.scale != 1.0:
        out = (out - features.offset) * features.scale
    return np.ascontiguousarray(out, dtype=np.float32)


def _stats(w: FloatArray, names: tuple[str, ...]) -> FloatArray:
    """``[B, channels, len(names)]``; same definitions as the rule engine's window functions."""
    mean = w.mean(axis=1)
    d = w - mean[:, None, :]
    m2 = (d * d).mean(axis=1)
    std = np.sqrt(m2)
    rms = np.sqrt((w * w).mean(axis=1))
    lo, hi = w.min(axis=1), w.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        crest = np.maximum(np.abs(lo), np.abs(hi)) / rms
        kurtosis = (d**4).mean(axis=1) / (m2 * m2)  # Pearson: 3 for a normal distribution
        skew = (d**3).mean(axis=1) / (m2 * std)
    table = {
        "mean": mean, "std": std, "rms": rms, "min": lo, "max": hi, "p2p": hi - lo,
        "crest": crest, "kurtosis": kurtosis, "skew": skew,
    }  # fmt: skip
    return np.stack([table[n] for n in names], axis=-1)


def _band_energies(w: FloatArray, bands: int, log: bool) -> FloatArray:
    """``[B, channels, bands]``: mean-square energy per equal-width band, DC excluded.

    Scaled so the bands sum to the window's variance (Parseval), whatever the window length.
    """
    n = w.shape[1]
    spec = np.fft.rfft(w, axis=1)
    power = (spec.real**2 + spec.imag**2) * (2.0 / (n * n))
    if n % 2 == 0:
        power[:, -1, :] *= 0.5  # the Nyquist bin has no mirror image
    bins = power[:, 1:, :]  # drop DC
    starts = (np.arange(bands) * bins.shape[1]) // bands
    energy = np.add.reduceat(bins, starts, axis=1)
    if log:
        energy = np.log10(energy + 1e-12)
    return np.moveaxis(energy, 1, 2)
