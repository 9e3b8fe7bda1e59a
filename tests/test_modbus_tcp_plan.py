"""Poll plan: coalescing of points into read requests (no network)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from gateway.config import DeviceConfig, PointConfig
from gateway.drivers.modbus_tcp.plan import build_plan
from gateway.impl import modbus


def _device(points: list[PointConfig], **kw: object) -> tuple[DeviceConfig, dict[str, int]]:
    kw.setdefault("poll_groups", {"default": 1.0, "fast": 0.1})
    cfg = DeviceConfig(name="d", points=tuple(points), **kw)  # type: ignore[arg-type]
    return cfg, {f"d.{p.name}": 100 + i for i, p in enumerate(points)}


def _spans(cfg: DeviceConfig, ids: dict[str, int]) -> list[tuple[str, str, int, int]]:
    plan = build_plan(cfg, ids)
    return [(g.name, b.table, b.address, b.count) for g in plan.groups for b in g.blocks]


def test_contiguous_points_become_one_request_with_word_counts() -> None:
    cfg, ids = _device(
        [
            PointConfig("a", 0, type="float32"),
            PointConfig("b", 2, type="uint16"),
            PointConfig("c", 3, type="int16"),
            PointConfig("d", 4, type="uint32"),
            PointConfig("e", 6, type="float64"),
        ]
    )
    assert _spans(cfg, ids) == [("default", "holding", 0, 10)]


def test_gap_up_to_max_gap_is_bridged_and_larger_gap_splits() -> None:
    cfg, ids = _device([PointConfig("a", 0), PointConfig("b", 9), PointConfig("c", 19)], max_gap=8)
    # 1..8 is a gap of 8 (bridged); 10..18 is a gap of 9 (split).
    assert _spans(cfg, ids) == [("default", "holding", 0, 10), ("default", "holding", 19, 1)]
    cfg0, ids0 = _device([PointConfig("a", 0), PointConfig("b", 2)], max_gap=0)
    assert _spans(cfg0, ids0) == [("default", "holding", 0, 1), ("default", "holding", 2, 1)]


def test_max_registers_splits_and_never_cuts_a_multiword_value() -> None:
    points = [PointConfig(f"p{i}", 2 * i, type="float32") for i in range(100)]  # 200 registers
    cfg, ids = _device(points)
    assert _spans(cfg, ids) == [("default", "holding", 0, 124), ("default", "holding", 124, 76)]
    cfg10, ids10 = _device(points[:10], max_registers=5)
    assert [s[3] for s in _spans(cfg10, ids10)] == [4, 4, 4, 4, 4]


def test_tables_and_poll_groups_are_never_mixed() -> None:
    cfg, ids = _device(
        [
            PointConfig("h0", 0, poll="fast"),
            PointConfig("h1", 1),
            PointConfig("i0", 0, table="input"),
            PointConfig("i1", 1, table="input"),
            PointConfig("c0", 0, table="coil", type="bool"),
            PointConfig("c5", 5, table="coil", type="bool"),
            PointConfig("d0", 0, table="discrete", type="bool", poll="fast"),
        ]
    )
    assert sorted(_spans(cfg, ids)) == sorted(
        [
            ("fast", "holding", 0, 1),
            ("fast", "discrete", 0, 1),
            ("default", "holding", 1, 1),
            ("default", "input", 0, 2),
            ("default", "coil", 0, 6),
        ]
    )


def test_bit_reads_respect_2000_bits() -> None:
    points = [PointConfig(f"c{i}", i, table="coil", type="bool") for i in range(2500)]
    cfg, ids = _device(points)
    assert _spans(cfg, ids) == [("default", "coil", 0, 2000), ("default", "coil", 2000, 500)]


def test_block_carries_request_ids_and_decoder() -> None:
    cfg, ids = _device(
        [
            PointConfig("t", 0, type="float32", word_order="little"),
            PointConfig("p", 2, type="uint16", scale=0.01, offset=1.0),
            PointConfig("run", 3, table="coil", type="bool", writable=True),
        ],
        unit_id=7,
    )
    plan = build_plan(cfg, ids)
    coil, holding = plan.groups[0].blocks
    assert (holding.function, coil.function) == (3, 1)
    assert bytes(holding.adu_tail) == modbus.build_read_request(0, 7, 3, 0, 3)[2:]
    assert holding.point_ids.dtype == np.uint32 and list(holding.point_ids) == [100, 101]
    assert list(coil.point_ids) == [102] and coil.bit_index is not None
    assert list(coil.bit_index) == [0] and coil.byte_count == 1
    regs = struct.pack(">f", 21.5)
    body = regs[2:] + regs[:2] + struct.pack(">H", 1234)
    out = np.empty(2)
    holding.decoder.decode(body, out)  # type: ignore[union-attr]
    assert out[0] == pytest.approx(21.5) and out[1] == pytest.approx(13.34)
    assert sorted(plan.point_ids.tolist()) == [100, 101, 102]
    assert plan.points["d.run"].writable and not plan.points["d.t"].writable


@pytest.mark.parametrize(
    ("point", "kw", "message"),
    [
        (PointConfig("x", 0, table="coil", type="uint16"), {}, "bool"),
        (PointConfig("x", 0, type="bool"), {}, "register type"),
        (PointConfig("x", 0, poll="nope"), {}, "poll group"),
        (PointConfig("x", 0, table="input", writable=True), {}, "writable"),
        (PointConfig("x", 65535, type="uint32"), {}, "runs past"),
        (PointConfig("x", 0), {"max_registers": 126}, "max_registers"),
        (PointConfig("x", 0, type="float64"), {"max_registers": 3}, "exceed"),
    ],
)
def test_inconsistent_config_is_rejected(
    point: PointConfig, kw: dict[str, object], message: str
) -> None:
    cfg, ids = _device([point], **kw)
    with pytest.raises(ValueError, match=message):
        build_plan(cfg, ids)


def test_missing_point_id_is_rejected() -> None:
    cfg, _ = _device([PointConfig("x", 0)])
    with pytest.raises(ValueError, match="no point id"):
        build_plan(cfg, {})
