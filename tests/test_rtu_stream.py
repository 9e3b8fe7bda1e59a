"""Bulk RTU stream decoding (decode_rtu_stream): values, resync, compiled == pure."""

from __future__ import annotations

import importlib
import os
import struct
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._pure import modbus as pure
from gateway.impl import modbus as impl

SETTINGS = settings(max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150")),
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _native() -> ModuleType | None:
    if os.environ.get("GATEWAY_PUREPYTHON") == "1":
        return None
    try:
        return importlib.import_module("gateway._native.modbus")
    except ImportError:
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        return None


native: Any = _native()


def response(unit: int, regs: list[int], fc: int = 3) -> bytes:
    body = bytes((unit, fc, 2 * len(regs))) + struct.pack(f">{len(regs)}H", *regs)
    return body + pure.crc16(body).to_bytes(2, "little")


def decoder(m: Any) -> Any:
    return m.RegisterDecoder([0, 1, 3], [m.T_UINT16, m.T_FLOAT32, m.T_INT16], [0, 0, 0],
                             [1.0, 1.0, 0.5], [0.0, 0.0, 1.0])  # fmt: skip


def test_values_and_resync_after_garbage() -> None:
    f = struct.unpack(">2H", struct.pack(">f", 1.5))
    good = response(7, [42, f[0], f[1], 0xFFFE])
    bad_crc = bytearray(good)
    bad_crc[4] ^= 1
    stream = good + b"\x01\x03\xff" + bytes(bad_crc) + response(2, [1]) + good + good[:5]
    dec = decoder(impl)
    out, units = np.zeros((8, 3)), np.zeros(8, np.uint8)
    assert impl.decode_rtu_stream(stream, dec, out, units) == 2
    assert out[:2].tolist() == [[42.0, 1.5, 0.0]] * 2 and units[:2].tolist() == [7, 7]
    assert dec.last_skipped == 2  # the garbage run + the 1-register frame
    assert dec.last_consumed == len(stream) - 5


@pytest.mark.skipif(native is None, reason="compiled modbus not built")
@SETTINGS
@given(st.lists(st.one_of(
    st.builds(response, st.integers(0, 255), st.lists(st.integers(0, 0xFFFF), min_size=1,
              max_size=6), st.sampled_from([3, 4, 5])),
    st.binary(min_size=1, max_size=9)), max_size=15).map(b"".join), st.integers(0, 12))  # fmt: skip
def test_parity(stream: bytes, rows: int) -> None:
    outs = []
    for m in (native, pure):
        dec = decoder(m)
        out, units = np.zeros((rows, 3)), np.zeros(rows, np.uint8)
        k = m.decode_rtu_stream(stream, dec, out, units)
        outs.append((k, out[:k].copy(), units[:k].tolist(), dec.last_skipped,
                     dec.last_consumed))  # fmt: skip
    (ka, va, *rest_a), (kb, vb, *rest_b) = outs
    assert (ka, rest_a) == (kb, rest_b)
    np.testing.assert_array_equal(va, vb)  # NaN == NaN here, bit patterns aside


def test_sniffer_framing_does_not_depend_on_read_boundaries() -> None:
    # Found by `make fuzz`: bytes that pass both a response's and a request's CRC.
    data = bytes.fromhex("0001010100518801010400000000fbd10101010051880000")
    whole = impl.RtuFramer("sniff").feed(data)
    f = impl.RtuFramer("sniff")
    assert f.feed(data[:1]) + f.feed(data[1:5]) + f.feed(data[5:]) == whole
    assert [d for d, *_ in whole] == [1, 1, 1]
