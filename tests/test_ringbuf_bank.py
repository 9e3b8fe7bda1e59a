"""Ring bank and batch ingest: both twins against a per-sample model and against each other.

The model is the per-sample path ``PointTable.ingest`` used before the batch ingest (push every
GOOD sample in batch order, then set the last-value columns), written out on deques. Example
counts scale with ``GATEWAY_FUZZ_EXAMPLES`` (``make fuzz`` raises it).
"""

from __future__ import annotations

import math
import os
from collections import deque
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ringbuf import TWINS, assert_stats_equal, native, reference_stats

from gateway._pure import ringbuf as pure
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150"))
GOOD = int(Quality.GOOD)


@pytest.fixture(params=TWINS)
def rb(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


class Model:
    """Per-point deques and last-value lists: the old per-sample ingest, one sample at a time."""

    def __init__(self, capacities: list[int]) -> None:
        self.rings = [deque[tuple[float, float]](maxlen=c) for c in capacities]
        self.last = [(math.nan, math.nan, int(Quality.BAD))] * len(capacities)

    def ingest(self, ids: np.ndarray, ts: np.ndarray, vals: np.ndarray, q: np.ndarray) -> None:
        for p, t, v, qq in zip(ids.tolist(), ts.tolist(), vals.tolist(), q.tolist(), strict=True):
            if qq == GOOD:
                self.rings[p].append((t, v))
            self.last[p] = (v, t, qq)


def random_batch(rng: np.random.Generator, points: int, n: int, t0: float) -> SampleBatch:
    """``n`` samples in time order over ``points`` ids (repeats likely), mixed qualities."""
    ids = rng.integers(0, points, n).astype(np.uint32)
    ts = t0 + np.cumsum(rng.integers(0, 3, n)).astype(np.float64)  # equal timestamps happen
    q = rng.choice(np.array([0, 0, 0, 1, 2], np.uint8), n)
    vals = np.where(q == Quality.BAD, math.nan, rng.normal(0, 100, n))
    return SampleBatch(ids, ts, vals, q)


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_matches(table_rings: list, last: tuple, model: Model) -> None:
    lv, lt, lq = last
    for p, want in enumerate(model.rings):
        ring = table_rings[p]
        assert len(ring) == len(want) and ring.capacity == want.maxlen
        ts, vals = ring.last(len(want))
        assert ts.tolist() == [s[0] for s in want]
        assert all(same(a, s[1]) for a, s in zip(vals.tolist(), want, strict=True))
        v, t, q = model.last[p]
        assert same(float(lv[p]), v) and same(float(lt[p]), t) and int(lq[p]) == q


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    points=st.integers(1, 7),
    capacity=st.integers(1, 9),
    grown=st.lists(st.integers(0, 6), max_size=3),
    sizes=st.lists(st.sampled_from([0, 1, 2, 5, 17, 100, 256, 257, 600]), min_size=1, max_size=6),
)
def test_bank_ingest_twins_match_the_per_sample_model(
    seed: int, points: int, capacity: int, grown: list[int], sizes: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    mods = [pure] + ([native] if native is not None else [])
    capacities = [capacity] * points
    tables = []
    for mod in mods:
        bank = mod.RingBank(capacity)
        rings = [bank.new_ring() for _ in range(points)]
        for p in grown:  # like PointTable.ensure_capacity: a ring of its own, another capacity
            if p < points:
                rings[p] = mod.RingBuffer(capacity + 3 + p)
                capacities[p] = capacity + 3 + p
        last = (np.full(points, np.nan), np.full(points, np.nan), np.full(points, 2, np.uint8))
        tables.append((mod, rings, last))
    model = Model(capacities)
    t0 = 0.0
    for n in sizes:
        b = random_batch(rng, points, n, t0)
        t0 += 3.0 * n
        model.ingest(b.point_ids, b.ts, b.values, b.quality)
        for mod, rings, last in tables:
            mod.ingest(rings, b.point_ids, b.ts, b.values, b.quality, GOOD, *last)
    for _, rings, last in tables:
        assert_matches(rings, last, model)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=64)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    capacity=st.integers(1, 9),
    chunks=st.lists(st.lists(finite, max_size=25), max_size=12),
    queries=st.lists(st.tuples(st.integers(0, 12), st.floats(-5, 300)), min_size=1, max_size=5),
)
def test_compact_bank_rings_match_the_model_on_every_window(
    capacity: int, chunks: list[list[float]], queries: list[tuple[int, float]]
) -> None:
    """Bank rows are not mirrored: windows that wrap around a row's end are stitched copies."""
    banks = [m.RingBank(capacity) for m in ([pure] + ([native] if native else []))]
    pairs = [(b.new_ring(), b.new_ring()) for b in banks]  # neighbours share a block
    model: deque[tuple[float, float]] = deque(maxlen=capacity)
    t = 0.0
    for chunk in chunks:
        ts = t + 1.0 + np.arange(len(chunk), dtype=np.float64)
        t += len(chunk)
        model.extend(zip(ts.tolist(), chunk, strict=True))
        for ring, neighbour in pairs:
            if len(chunk) == 1:
                ring.push(float(ts[0]), chunk[0])
            else:
                ring.extend(ts, np.array(chunk, np.float64))
            neighbour.extend(-ts, -np.ones(len(chunk)))  # must never show up in `ring`
    mts, mvals = [p[0] for p in model], [p[1] for p in model]
    scale = max((abs(v) for v in mvals), default=1.0) * 1e3
    for n, t0 in queries:
        want_since = [v for ts_, v in model if ts_ > t0]
        for ring, _ in pairs:
            assert len(ring) == len(model)
            lt, lv = ring.last(n)
            assert lt.tolist() == (mts[-n:] if n else []) and lv.tolist() == (
                mvals[-n:] if n else []
            )
            assert not lt.flags.writeable and not lv.flags.writeable
            assert ring.since(t0)[1].tolist() == want_since
            assert_stats_equal(ring.stats(n), reference_stats(mvals[-n:] if n else []), scale)
            assert_stats_equal(ring.stats(since=t0), reference_stats(want_since), scale)
            want_both = [v for ts_, v in list(model)[-n:] if ts_ > t0] if n else []
            assert_stats_equal(ring.stats(n, since=t0), reference_stats(want_both), scale)


def test_compact_ring_halves_the_storage_and_copies_only_wrapped_windows(rb: ModuleType) -> None:
    bank = rb.RingBank(8)
    ring = bank.new_ring()
    ring.extend(np.arange(5.0), np.arange(5.0))
    ts, _ = ring.last(5)
    assert ts.base is not None and ts.base.size == 8 * bank.rows_per_block  # a view, no mirror
    ring.extend(np.arange(5.0, 12.0), np.arange(5.0, 12.0))  # head at 4: the window wraps
    ts, vals = ring.last(8)
    assert ts.tolist() == list(np.arange(4.0, 12.0)) and vals.base is None  # stitched copy
    assert ring.last(4)[0].base is not None  # slots 0..3: no wrap, a view again


def test_point_table_ingest_matches_the_per_sample_model_with_wrap_and_grown_rings() -> None:
    rng = np.random.default_rng(15)
    table = PointTable(ring_capacity=8)
    for i in range(300):
        table.add(f"d{i % 7}.p{i}", f"d{i % 7}", "float32")
    table.ensure_capacity(3, 40)
    table.ensure_capacity(299, 1000)
    model = Model([r.capacity for r in table.rings])
    t0 = 0.0
    for n in [100] * 30 + [1, 700, 0, 257]:  # the 100k load's batch size, then odd ones
        b = random_batch(rng, len(table), n, t0)
        t0 += 3.0 * n
        table.ingest(b)
        model.ingest(b.point_ids, b.ts, b.values, b.quality)
    assert_matches(table.rings, (table.last_value, table.last_ts, table.last_quality), model)


def test_bank_rings_share_blocks_and_do_not_disturb_each_other(rb: ModuleType) -> None:
    bank = rb.RingBank(4)
    per = bank.rows_per_block
    rings = [bank.new_ring() for _ in range(per + 2)]
    assert len(bank) == per + 2 and rings[0].capacity == 4
    for i, r in enumerate(rings):
        r.extend(np.arange(10.0), np.full(10, float(i)))
    for i, r in enumerate(rings):
        assert r.last(10)[1].tolist() == [float(i)] * 4
        assert r.last(10)[0].tolist() == [6.0, 7.0, 8.0, 9.0]
    # One allocation per block: the first block's rings are views of the same array.
    assert rings[0].last(1)[0].base is rings[per - 1].last(1)[0].base
    assert rings[0].last(1)[0].base is not rings[per].last(1)[0].base
    with pytest.raises(ValueError):
        rb.RingBank(0)


def test_point_table_rings_live_in_one_bank() -> None:
    table = PointTable(ring_capacity=128)
    for i in range(50):
        table.add(f"d.p{i}", "d", "uint16")
    bases = {id(r.last(0)[0].base) for r in table.rings}
    assert len(bases) == 1  # was one pair of arrays per point


def _table(points: int = 3) -> PointTable:
    table = PointTable(ring_capacity=4)
    for i in range(points):
        table.add(f"d.p{i}", "d", "uint16")
    return table


def _state(table: PointTable) -> tuple[list[list[float]], list[float], list[int]]:
    rings = [r.last(r.capacity)[1].tolist() for r in table.rings]
    return rings, table.last_ts.tolist(), table.last_quality.tolist()


@pytest.mark.parametrize(
    "ids, exc, words",
    [
        (np.array([0, 1, 3], np.uint32), IndexError, "point id 3 out of range (3 points)"),
        (np.array([0, -1, 1], np.int64), IndexError, "point id -1 out of range"),
        (np.array([0.0, 1.0, 2.0]), TypeError, "point ids must be integers"),
    ],
)
def test_a_bad_batch_is_refused_whole_with_a_clear_error(
    ids: np.ndarray, exc: type[Exception], words: str
) -> None:
    table = _table()
    table.ingest(
        SampleBatch(np.array([0, 1, 2], np.uint32), np.ones(3), np.ones(3), np.zeros(3, np.uint8))
    )
    before = _state(table)
    batch = SampleBatch(ids, np.full(3, 2.0), np.full(3, 5.0), np.zeros(3, np.uint8))
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        table.ingest(batch)
    assert _state(table) == before  # nothing of the bad batch was written


def test_ingest_checks_column_lengths_and_ring_types(rb: ModuleType) -> None:
    bank = rb.RingBank(4)
    rings = [bank.new_ring(), bank.new_ring()]
    last = (np.zeros(2), np.zeros(2), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="columns differ in length"):
        rb.ingest(rings, [0, 1], [1.0], [1.0, 2.0], [0, 0], GOOD, *last)
    with pytest.raises(ValueError, match="last-value columns"):
        rb.ingest(rings, [0], [1.0], [1.0], [0], GOOD, np.zeros(3), *last[1:])
    if rb is native:
        with pytest.raises(TypeError, match="not RingBuffer"):
            rb.ingest([rings[0], object()], [1], [1.0], [1.0], [0], GOOD, *last)
