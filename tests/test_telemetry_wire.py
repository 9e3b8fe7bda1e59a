"""Issue 15: the telemetry record built from the columns decodes exactly as the ``packb`` one."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.core.model import SampleBatch
from gateway.core.records import decode, encode_telemetry, encode_telemetry_reference
from gateway.core.telemetry_wire import uints

SIZES = st.sampled_from([0, 1, 15, 16, 17]) | st.integers(0, 200)


@st.composite
def batches(draw: st.DrawFn) -> SampleBatch:
    n = draw(SIZES)
    top = draw(st.sampled_from([1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF]))
    ids = draw(hnp.arrays(np.uint32, n, elements=st.integers(0, top)))
    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    ts = draw(hnp.arrays(np.float64, n, elements=floats))
    values = draw(hnp.arrays(np.float64, n, elements=floats))
    quality = draw(hnp.arrays(np.uint8, n))
    return SampleBatch(ids, ts, values, quality)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(batches(), st.text(max_size=40))
def test_decodes_as_the_packb_record(batch: SampleBatch, model: str) -> None:
    ours, ref = encode_telemetry(model, batch), encode_telemetry_reference(model, batch)
    a, b = decode(ours), decode(ref)
    assert list(a) == list(b) == ["v", "model", "id", "ts", "x", "q"]
    for key in a:
        assert _same(a[key], b[key]), key


def test_nan_values_are_nil_and_widths_follow_the_largest_value() -> None:
    b = SampleBatch(
        np.array([1, 300], np.uint32), np.array([1.0, 2.0]), np.array([np.nan, 5.0]),
        np.array([2, 0], np.uint8),
    )  # fmt: skip
    rec = decode(encode_telemetry("m", b))
    assert rec["x"] == [None, 5.0] and rec["id"] == [1, 300] and rec["q"] == [2, 0]
    assert uints(np.array([1, 300], np.uint32)) == b"\x92\xcd\x00\x01\xcd\x01\x2c"
    assert uints(np.array([1, 127], np.uint8)) == b"\x92\x01\x7f"


def test_long_batches_use_the_16_and_32_bit_array_headers() -> None:
    rng = np.random.default_rng(15)
    for n in (65535, 65536):
        values = rng.random(n)
        values[::7] = np.nan
        b = SampleBatch(np.arange(n, dtype=np.uint32), rng.random(n), values,
                        np.zeros(n, np.uint8))  # fmt: skip
        a, ref = decode(encode_telemetry("m", b)), decode(encode_telemetry_reference("m", b))
        assert a == {**ref, "x": a["x"]} and a["x"][::7] == [None] * len(range(0, n, 7))
        assert _same(a["x"], ref["x"])
