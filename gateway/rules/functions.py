"""Built-in functions of the rule language: argument checks, window reducers, stateful operators.

Windows
-------
A window function reads a point's ring buffer (:mod:`gateway.impl` ``ringbuf``), never a copy:

* ``avg(p, 10s)``: the samples with ``now - 10s < ts <= now`` (time window);
* ``avg(p, 100 samples)``: the newest 100 samples with ``ts <= now`` (count window);
* ``avg(p, between(start, end))``: a state window, from the evaluation at which ``start`` became
  true to the one at which ``end`` became true (both included); while it is open it grows up to
  ``now``, once closed it keeps its value until the next ``start``.

``now`` is the timestamp of the sample being evaluated, so a window seen mid-batch never
includes later samples of the same batch. Only good samples are in the rings. An empty window is
unknown, except ``count`` and ``sum`` (0).

Vibration KPIs follow the usual condition-monitoring definitions: ``rms`` = sqrt(mean x^2)
(ISO 10816 / 20816 velocity severity is the RMS of the velocity signal), ``peak`` = max |x|
(zero-peak), ``p2p`` = max - min, ``crest`` = peak / rms, ``kurtosis`` = m4 / m2^2 (Pearson's,
3 for Gaussian noise; bearing damage drives it up), ``skew`` = m3 / m2^1.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from gateway.impl import ringbuf
from gateway.rules.nodes import WINDOW_FUNCTIONS, Call, Const, Node, PointRef

FloatArray = npt.NDArray[np.float64]
Value = float | bool | None
Reducer = Callable[[FloatArray, FloatArray], Value]

_window_stats = ringbuf.window_stats

#: Samples kept for a point read through a ``between()`` state window (32 bytes each).
STATE_WINDOW_SAMPLES = 4096
#: Largest sample count a window may ask for.
MAX_WINDOW_SAMPLES = 1_000_000


def _stat(field: int) -> Reducer:
    def reduce(ts: FloatArray, v: FloatArray) -> Value:
        if v.shape[0] == 0:
            return None
        return float(_window_stats(v)[field])

    return reduce


def _sum(ts: FloatArray, v: FloatArray) -> Value:
    return float(v.sum())


def _count(ts: FloatArray, v: FloatArray) -> Value:
    return float(v.shape[0])


def _peak(ts: FloatArray, v: FloatArray) -> Value:
    return float(np.abs(v).max()) if v.shape[0] else None


def _moment_ratio(order: int, power: float) -> Reducer:
    def reduce(ts: FloatArray, v: FloatArray) -> Value:
        if v.shape[0] < 2:
            return None
        d = v - v.mean()
        m2 = float(np.dot(d, d)) / v.shape[0]
        if not m2 > 0.0:
            return None if m2 == 0.0 else math.nan
        return float(np.mean(d**order)) / m2**power

    return reduce


def _median(ts: FloatArray, v: FloatArray) -> Value:
    return float(np.median(v)) if v.shape[0] else None


def _delta(ts: FloatArray, v: FloatArray) -> Value:
    return float(v[-1] - v[0]) if v.shape[0] >= 2 else None


def _rate(ts: FloatArray, v: FloatArray) -> Value:
    if v.shape[0] < 2 or ts[-1] <= ts[0]:
        return None
    return float(v[-1] - v[0]) / float(ts[-1] - ts[0])


def _integral(ts: FloatArray, v: FloatArray) -> Value:
    """Trapezoidal integral over the samples, value x seconds (kW -> kJ)."""
    if v.shape[0] < 2:
        return 0.0 if v.shape[0] == 1 else None
    return float(np.trapezoid(v, ts))


def _increase(ts: FloatArray, v: FloatArray) -> Value:
    """Growth of a counter that may reset: a drop counts as a reset to 0 (Prometheus style)."""
    if v.shape[0] < 2:
        return None
    d = np.diff(v)
    return float(np.where(d >= 0.0, d, v[1:]).sum())


def _first(ts: FloatArray, v: FloatArray) -> Value:
    return float(v[0]) if v.shape[0] else None


def _last(ts: FloatArray, v: FloatArray) -> Value:
    return float(v[-1]) if v.shape[0] else None


REDUCERS: dict[str, Reducer] = {
    "avg": _stat(1),
    "min": _stat(2),
    "max": _stat(3),
    "rms": _stat(4),
    "std": _stat(5),
    "p2p": _stat(6),
    "crest": _stat(7),
    "sum": _sum,
    "count": _count,
    "peak": _peak,
    "kurtosis": _moment_ratio(4, 2.0),
    "skew": _moment_ratio(3, 1.5),
    "median": _median,
    "delta": _delta,
    "rate": _rate,
    "integral": _integral,
    "increase": _increase,
    "first": _first,
    "last": _last,
}
assert set(REDUCERS) == WINDOW_FUNCTIONS


def percentile(q: float) -> Reducer:
    def reduce(ts: FloatArray, v: FloatArray) -> Value:
        return float(np.percentile(v, q)) if v.shape[0] else None

    return reduce


def cut(ts: FloatArray, v: FloatArray, now: float) -> tuple[FloatArray, FloatArray]:
    """Drop samples newer than ``now`` (later samples of the batch being walked)."""
    if ts.shape[0] and ts[-1] > now:
        k = int(np.searchsorted(ts, now, side="right"))
        return ts[:k], v[:k]
    return ts, v


# --- compile-time checks ------------------------------------------------------------------------

Fail = Callable[[str, int], Exception]
_WINDOW_HINT = "a duration like 10s, a count like 100 samples, or between(start, end)"


def is_window_call(node: Node) -> bool:
    """``min``/``max`` are window functions when their second argument is a window."""
    if not isinstance(node, Call) or node.name not in WINDOW_FUNCTIONS:
        return False
    if node.name in ("min", "max"):
        return len(node.args) == 2 and is_window_spec(node.args[1])
    return True


def is_window_spec(node: Node) -> bool:
    return (isinstance(node, Const) and node.unit in ("s", "samples")) or (
        isinstance(node, Call) and node.name == "between"
    )


def check_call(node: Call, fail: Fail) -> None:
    """Argument checks that the grammar cannot express; raises ``fail(message, column)``."""
    name, args = node.name, node.args
    if is_window_call(node):
        _need_point(node, args[0], fail)
        _need_window(node, args[-1], fail)
    elif name == "percentile":
        _need_point(node, args[0], fail)
        q = args[1]
        if not (isinstance(q, Const) and q.unit == "" and 0 <= float(q.value) <= 100):
            raise fail(f"percentile() needs a constant 0..100 at column {q.col}", q.col)
        _need_window(node, args[2], fail)
    elif name == "lag":
        _need_point(node, args[0], fail)
        n = args[1]
        if not (isinstance(n, Const) and n.unit in ("", "samples") and _whole(n.value, 0)):
            raise fail(f"lag() needs a whole number of samples >= 0 at column {n.col}", n.col)
    elif name in ("latest", "stale"):
        _need_point(node, args[0], fail)
        if name == "stale":
            d = args[1]
            if not (isinstance(d, Const) and d.unit == "s" and float(d.value) > 0):
                raise fail(f"stale() needs a duration like 30s at column {d.col}", d.col)
    elif name == "between":
        raise fail(
            f"between() is a window, not a value, at column {node.col}: "
            "use it as the last argument of a window function, e.g. "
            "integral(meter.power, between(press1.run == 1, press1.run == 0))",
            node.col,
        )
    elif name == "deadband":
        d = args[1]
        if not (isinstance(d, Const) and d.unit == "" and float(d.value) >= 0):
            raise fail(f"deadband() needs a constant band >= 0 at column {d.col}", d.col)
    elif name == "round" and len(args) == 2:
        d = args[1]
        if not (isinstance(d, Const) and d.unit == "" and _whole(d.value, 0, 15)):
            raise fail(f"round() digits must be a whole number 0..15 at column {d.col}", d.col)
    for arg in args:
        if isinstance(arg, Const) and arg.unit and not _may_take_window(node, arg):
            what = "a duration" if arg.unit == "s" else "a sample count"
            raise fail(
                f"{arg_text(arg)} is {what}; only window functions, lag() and stale() take one "
                f"(at column {arg.col})",
                arg.col,
            )


def _may_take_window(node: Call, arg: Node) -> bool:
    if is_window_call(node) or node.name in ("percentile", "stale", "lag"):
        return arg is node.args[-1]
    return False


def arg_text(node: Const) -> str:
    v = float(node.value)
    return f"{v:g}s" if node.unit == "s" else f"{v:g} samples"


def _whole(x: float | bool, lo: int, hi: int = MAX_WINDOW_SAMPLES) -> bool:
    return float(x) == int(x) and lo <= int(x) <= hi


def _need_point(node: Call, arg: Node, fail: Fail) -> None:
    if not isinstance(arg, PointRef):
        raise fail(
            f"{node.name}() reads a point's samples: its first argument must be a point like "
            f"'motor1.vibration' (at column {arg.col})",
            arg.col,
        )


def _need_window(node: Call, arg: Node, fail: Fail) -> None:
    if not is_window_spec(arg):
        raise fail(
            f"{node.name}() needs a window as its last argument: {_WINDOW_HINT} "
            f"(at column {arg.col})",
            arg.col,
        )
    if isinstance(arg, Const):
        if arg.unit == "s" and not float(arg.value) > 0:
            raise fail(f"a time window must be longer than 0s (at column {arg.col})", arg.col)
        if arg.unit == "samples" and not _whole(arg.value, 1):
            raise fail(
                f"a count window must be 1..{MAX_WINDOW_SAMPLES} samples (at column {arg.col})",
                arg.col,
            )
