"""CAN codec: signal extraction agrees with cantools, and compiled == pure on every input."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import cantools
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._pure import can as pure
from gateway.impl import can as impl

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _native() -> ModuleType | None:
    if os.environ.get("GATEWAY_PUREPYTHON") == "1":
        return None
    try:
        return importlib.import_module("gateway._native.can")
    except ImportError:
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        return None


native: Any = _native()
needs_native = pytest.mark.skipif(native is None, reason="compiled can not built")


@st.composite
def signal(draw: st.DrawFn) -> tuple[int, int, int, bool, bool, float, float]:
    big = draw(st.booleans())
    length = draw(st.integers(1, 64))
    if big:  # Motorola: the MSB's big-endian index + length must fit 64 bits
        msb = draw(st.integers(0, 64 - length))
        start = (msb // 8) * 8 + (7 - msb % 8)
    else:
        start = draw(st.integers(0, 64 - length))
    scale = draw(st.sampled_from([1.0, 0.125, 0.5, -2.0, 1e-3]))
    return start, length, big, draw(st.booleans()), scale, draw(st.sampled_from([0.0, -40.0, 3.5]))


@SETTINGS
@given(st.lists(signal(), min_size=1, max_size=6), st.lists(st.binary(min_size=8, max_size=8),
       min_size=1, max_size=20))  # fmt: skip
def test_signals_match_cantools(sigs: list[Any], frames: list[bytes]) -> None:
    # One cantools message per signal: cantools refuses overlapping signals in one message.
    msgs = [cantools.database.can.Message(0x10, "M", 8, [cantools.database.can.Signal(
        "s", start, length, "big_endian" if big else "little_endian", signed,
        conversion=cantools.database.conversion.LinearConversion(scale, off, False))],
        strict=False) for start, length, big, signed, scale, off in sigs]  # fmt: skip
    layout = [(0x10, *s, i) for i, s in enumerate(sigs)]
    dec = impl.SignalDecoder(layout)
    n = len(frames)
    ids = np.full(n, 0x10, np.uint32)
    data = np.frombuffer(b"".join(frames), np.uint8).reshape(n, 8)
    dlc = np.full(n, 8, np.uint8)
    rows, pts, vals = (np.empty(n * len(sigs), t) for t in (np.uint32, np.uint32, np.float64))
    k = dec.decode(ids, data, dlc, rows, pts, vals)
    assert k == n * len(sigs)
    for j in range(k):
        want = msgs[pts[j]].decode(frames[rows[j]], decode_choices=False, scaling=True)["s"]
        assert vals[j] == pytest.approx(float(want), rel=1e-12, abs=1e-9)


@needs_native
@SETTINGS
@given(
    st.lists(signal(), min_size=0, max_size=8),
    st.lists(st.tuples(st.integers(0, 3), st.binary(min_size=8, max_size=8), st.integers(0, 8)),
             max_size=40),
    st.booleans(), st.integers(0, 50),
)  # fmt: skip
def test_decoder_parity(sigs: list[Any], frames: list[Any], j1939: bool, cap: int) -> None:
    keys = [0x10, 0x80000000 | 0x0CF00400, 0x80000000 | 0x18FECA00, 0x7FF]
    layout = [(keys[i % 4] if not j1939 else pure.j1939_key(keys[i % 4] & 0x1FFFFFFF)
               if keys[i % 4] & 0x80000000 else keys[i % 4], *s, i) for i, s in enumerate(sigs)]  # fmt: skip
    a, b = native.SignalDecoder(layout, j1939), pure.SignalDecoder(layout, j1939)
    n = len(frames)
    ids = np.array([keys[k] | (i % 3 if keys[k] & 0x80000000 else 0) for i, (k, _, _) in
                    enumerate(frames)], np.uint32)  # fmt: skip
    data = np.frombuffer(b"".join(f for _, f, _ in frames), np.uint8).reshape(n, 8)
    dlc = np.array([d for _, _, d in frames], np.uint8)
    outs = []
    for dec in (a, b):
        rows, pts, vals = np.zeros(cap, np.uint32), np.zeros(cap, np.uint32), np.zeros(cap)
        k = dec.decode(ids, data, dlc, rows, pts, vals)
        outs.append((k, rows[:k].tolist(), pts[:k].tolist(), vals[:k].tolist(),
                     dec.last_unmatched, dec.last_short))  # fmt: skip
    assert outs[0] == outs[1]


@needs_native
@SETTINGS
@given(st.lists(st.integers(0, 0x1FFFFFFF), max_size=50))
def test_j1939_split_parity(raw: list[int]) -> None:
    ids = np.array(raw, np.uint32) | np.uint32(0x80000000)
    res = []
    for m in (native, pure):
        cols = [np.zeros(len(raw), t) for t in (np.uint8, np.uint32, np.uint8, np.uint8)]
        m.split_j1939(ids, *cols)
        res.append([c.tolist() for c in cols])
    assert res[0] == res[1]


def test_j1939_fields_and_dm1() -> None:
    ids = np.array([0x18FECA03, 0x1CEBF900], np.uint32)
    prio, pgn, sa, da = (np.zeros(2, t) for t in (np.uint8, np.uint32, np.uint8, np.uint8))
    impl.split_j1939(ids, prio, pgn, sa, da)
    assert prio.tolist() == [6, 7] and pgn.tolist() == [0xFECA, 0xEB00]
    assert sa.tolist() == [3, 0] and da.tolist() == [255, 0xF9]
    assert impl.dm1_dtcs(bytes((0, 0xFF, 190, 0, 0, 3, 0, 0, 0, 0))) == [(190, 0, 3)]
    assert impl.dm1_dtcs(bytes((0, 0xFF, 0x4E, 0x02, 0x60 | 5, 0x81))) == [(0x3024E, 5, 1)]
