"""Ring buffer and window statistics: both twins against a list model and against each other."""

from __future__ import annotations

import importlib
import math
import os
from collections import deque
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import impl
from gateway._pure import ringbuf as pure


def _native() -> ModuleType | None:
    try:
        return importlib.import_module("gateway._native.ringbuf")
    except ImportError:
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        return None


native = _native()
TWINS = [pytest.param(pure, id="pure")]
TWINS.append(
    pytest.param(native, id="native")
    if native is not None
    else pytest.param(None, id="native", marks=pytest.mark.skip("native ringbuf not built"))
)
FIELDS = pure.WindowStats._fields


def close(a: float, b: float, scale: float) -> bool:
    """NaN-aware closeness: rel 1e-9, plus an absolute slack for sums over values of ``scale``."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12 * scale)


def assert_stats_equal(a: pure.WindowStats, b: pure.WindowStats, scale: float = 1.0) -> None:
    assert a.count == b.count
    for f in FIELDS[1:]:
        assert close(getattr(a, f), getattr(b, f), scale), (f, a, b)


def reference_stats(values: list[float]) -> pure.WindowStats:
    """Textbook formulas on a copy, the oracle for both twins."""
    x = np.array(values, np.float64)
    if x.size == 0:
        return pure.WindowStats(0, *([math.nan] * 7))
    rms = math.sqrt(float(np.mean(x * x)))
    peak = float(np.max(np.abs(x)))
    crest = peak / rms if rms > 0 else math.nan
    return pure.WindowStats(
        len(x),
        float(np.mean(x)),
        float(x.min()),
        float(x.max()),
        rms,
        float(np.std(x)),
        float(x.max() - x.min()),
        crest,
    )


@pytest.fixture(params=TWINS)
def rb(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def test_impl_resolves_to_requested_twin() -> None:
    if os.environ.get("GATEWAY_PUREPYTHON") == "1":
        assert impl.ringbuf is pure
    elif os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
        assert impl.ringbuf is native
        assert impl.IMPLEMENTATION["ringbuf"] == "native"


def test_native_module_exposes_declared_attributes() -> None:
    if native is None:
        pytest.skip("native ringbuf not built")
    r = native.RingBuffer(3)
    assert r.capacity == 3 and len(r) == 0
    assert native.WindowStats is pure.WindowStats
    with pytest.raises(AttributeError):
        r.capacity = 4  # readonly attribute


def test_empty_buffer(rb: ModuleType) -> None:
    r = rb.RingBuffer(4)
    ts, vals = r.last(3)
    assert ts.shape == vals.shape == (0,)
    assert r.since(-math.inf)[0].shape == (0,)
    s = r.stats()
    assert s.count == 0 and all(math.isnan(getattr(s, f)) for f in FIELDS[1:])


def test_push_wraps_and_keeps_newest(rb: ModuleType) -> None:
    r = rb.RingBuffer(3)
    for i in range(10):
        r.push(float(i), float(10 * i))
    assert len(r) == 3 and r.capacity == 3
    ts, vals = r.last(5)
    assert ts.tolist() == [7.0, 8.0, 9.0] and vals.tolist() == [70.0, 80.0, 90.0]
    assert r.last(1)[1].tolist() == [90.0]
    assert r.last(0)[0].tolist() == []


def test_extend_longer_than_capacity(rb: ModuleType) -> None:
    r = rb.RingBuffer(4)
    r.push(-1.0, -1.0)
    r.extend(np.arange(10.0), np.arange(10.0) * 2)
    assert r.last(4)[0].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert r.last(4)[1].tolist() == [12.0, 14.0, 16.0, 18.0]
    r.extend(np.array([10.0]), np.array([20.0]))
    assert r.last(4)[0].tolist() == [7.0, 8.0, 9.0, 10.0]


def test_extend_accepts_lists_and_empty(rb: ModuleType) -> None:
    r = rb.RingBuffer(4)
    r.extend([], [])
    r.extend([1, 2], [3, 4])
    assert len(r) == 2 and r.last(2)[1].tolist() == [3.0, 4.0]


def test_since_is_strictly_after(rb: ModuleType) -> None:
    r = rb.RingBuffer(8)
    r.extend(np.array([1.0, 2.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 2.5, 3.0, 4.0]))
    assert r.since(2.0)[0].tolist() == [3.0, 4.0]
    assert r.since(1.5)[1].tolist() == [2.0, 2.5, 3.0, 4.0]
    assert r.since(4.0)[0].tolist() == []
    assert r.since(0.0)[0].tolist() == [1.0, 2.0, 2.0, 3.0, 4.0]


def test_stats_windows(rb: ModuleType) -> None:
    r = rb.RingBuffer(5)
    r.extend(np.arange(1.0, 8.0), np.array([1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0]))
    assert_stats_equal(r.stats(), reference_stats([3.0, -4.0, 5.0, -6.0, 7.0]))
    assert_stats_equal(r.stats(2), reference_stats([-6.0, 7.0]))
    assert_stats_equal(r.stats(since=5.0), reference_stats([-6.0, 7.0]))
    assert_stats_equal(r.stats(3, since=6.0), reference_stats([7.0]))
    assert r.stats(0).count == 0


def test_crest_and_nan_rules(rb: ModuleType) -> None:
    z = rb.window_stats(np.zeros(4))
    assert z.rms == 0.0 and z.std == 0.0 and math.isnan(z.crest)
    s = rb.window_stats(np.array([1.0, math.nan, 2.0]))
    assert s.count == 3 and all(math.isnan(getattr(s, f)) for f in FIELDS[1:])
    sine = np.sin(np.linspace(0, 200 * math.pi, 20001))
    assert rb.window_stats(sine).crest == pytest.approx(math.sqrt(2), rel=1e-4)


def test_std_is_numerically_sound(rb: ModuleType) -> None:
    # Large offset, tiny spread: the naive E[x^2] - E[x]^2 formula loses every digit here.
    x = 1e9 + np.array([0.1, 0.2, 0.3, 0.4])
    assert rb.window_stats(x).std == pytest.approx(float(np.std(x)), rel=1e-6)


def test_invalid_arguments(rb: ModuleType) -> None:
    with pytest.raises(ValueError):
        rb.RingBuffer(0)
    r = rb.RingBuffer(4)
    with pytest.raises(ValueError):
        r.extend(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError):
        r.last(-1)
    with pytest.raises(TypeError):
        r.last(1.5)
    with pytest.raises(ValueError):
        rb.window_stats(np.zeros((2, 2)))


def test_windows_are_readonly_views(rb: ModuleType) -> None:
    r = rb.RingBuffer(16)
    r.extend(np.arange(40.0), np.arange(40.0))  # wrapped: the window straddles the mirror
    ts, vals = r.last(10)
    ts2, vals2 = r.since(35.0)
    for view in (ts, vals, ts2, vals2):
        assert not view.flags.writeable
        assert view.base is not None
        with pytest.raises(ValueError):
            view[0] = 1.0
    assert np.shares_memory(ts, ts2) and np.shares_memory(vals, vals2)
    r.push(40.0, 40.0)  # a later write lands in the same storage the earlier view aliases
    assert np.shares_memory(r.last(1)[1], r.last(16)[1])
    # The newest sample is at slot 40 % 16 == 8 and its mirror; the second-newest window of
    # length 16 must still be one contiguous slice (no copy): check by address arithmetic.
    t16, _ = r.last(16)
    assert t16.tolist() == list(np.arange(25.0, 41.0))


# --- model and parity ------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=64)
op = st.one_of(
    st.tuples(st.just("push"), finite),
    st.tuples(st.just("extend"), st.lists(finite, max_size=40)),
)


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 17),
    ops=st.lists(op, max_size=60),
    queries=st.lists(st.tuples(st.integers(0, 20), st.floats(-5, 400)), min_size=1, max_size=5),
)
def test_twins_match_model_and_each_other(
    capacity: int, ops: list[tuple[str, object]], queries: list[tuple[int, float]]
) -> None:
    twins = [pure.RingBuffer(capacity)] + ([native.RingBuffer(capacity)] if native else [])
    model: deque[tuple[float, float]] = deque(maxlen=capacity)
    t = 0.0
    for kind, arg in ops:
        if kind == "push":
            assert isinstance(arg, float)
            t += 1.0
            model.append((t, arg))
            for r in twins:
                r.push(t, arg)
        else:
            assert isinstance(arg, list)
            ts = t + 1.0 + np.arange(len(arg), dtype=np.float64)
            t += len(arg)
            model.extend(zip(ts.tolist(), arg, strict=True))
            for r in twins:
                r.extend(ts, np.array(arg, np.float64))
    mts = [p[0] for p in model]
    mvals = [p[1] for p in model]
    scale = max((abs(v) for v in mvals), default=1.0)
    for n, t0 in queries:
        want_last = mvals[-n:] if n else []
        want_since = [v for ts_, v in model if ts_ > t0]
        for r in twins:
            assert len(r) == len(model)
            lt, lv = r.last(n)
            assert lt.tolist() == (mts[-n:] if n else []) and lv.tolist() == want_last
            assert r.since(t0)[1].tolist() == want_since
            assert_stats_equal(r.stats(n), reference_stats(want_last), scale * 1e3)
            assert_stats_equal(r.stats(since=t0), reference_stats(want_since), scale * 1e3)
            assert_stats_equal(r.stats(), reference_stats(mvals), scale * 1e3)
        if len(twins) == 2:
            a, b = twins
            assert_stats_equal(a.stats(n, since=t0), b.stats(n, since=t0), scale)
            assert_stats_equal(a.stats(), b.stats(), scale)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=50))
def test_window_stats_parity_on_any_floats(values: list[float]) -> None:
    if native is None:
        pytest.skip("native ringbuf not built")
    x = np.array(values, np.float64)
    a, b = pure.window_stats(x), native.window_stats(x)
    finite_scale = max((abs(v) for v in values if math.isfinite(v)), default=1.0)
    if any(math.isnan(v) for v in values):
        assert a.count == b.count == len(values)
        assert all(math.isnan(getattr(s, f)) for s in (a, b) for f in FIELDS[1:])
        return
    if finite_scale > 1e150:
        # Sums of squares overflow; where inf - inf turns into NaN depends on summation order,
        # so only the order-free fields must agree.
        assert (a.count, a.min, a.max, a.p2p) == (b.count, b.min, b.max, b.p2p) or a.count == 0
        return
    if not all(math.isfinite(v) for v in values):
        # Infinities: the IEEE special-value pattern has to agree.
        assert a.count == b.count
        for f in FIELDS[1:]:
            va, vb = getattr(a, f), getattr(b, f)
            assert math.isnan(va) == math.isnan(vb), (f, a, b)
            if math.isinf(va) or math.isinf(vb):
                assert va == vb, (f, a, b)
        return
    assert_stats_equal(a, b, finite_scale)
