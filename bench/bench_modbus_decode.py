"""Modbus TCP response decoding: compiled core vs pure twin vs pymodbus, bytes -> values.

Builds one byte stream of N back-to-back fc 3 MBAP responses (10-register and 125-register blocks
with a realistic point mix) and decodes that same stream into engineering values with:

* compiled ``decode_stream`` (bulk into a 2-D float64 array),
* compiled ``MbapFramer.feed`` + ``RegisterDecoder.decode`` per frame (the TCP driver's path),
* the pure-Python twin, both ways,
* pymodbus 3.16.1's client side: ``FramerSocket.handleFrame`` -> ReadHoldingRegistersResponse,
  then ``convert_from_registers`` per point with scale/offset, as a pymodbus user would.

Prints frames/s medians over the repeats and the ratios. ``--quick`` is a few-second smoke run.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway._pure import modbus as pure  # noqa: E402

# (type, word_order) per point, in register order; byte order is big (pymodbus has no byte swap).
LAYOUT_10 = [
    ("float32", "big"),
    ("float32", "little"),
    ("float32", "big"),
    ("int16", "big"),
    ("int16", "big"),
    ("uint16", "big"),
    ("uint16", "big"),
]
LAYOUT_125 = (
    [("float32", "big")] * 12
    + [("float32", "little")] * 8
    + [("float64", "big")] * 5
    + [("int32", "big")] * 5
    + [("uint32", "little")] * 5
    + [("int16", "big")] * 25
    + [("uint16", "big")] * 20
)
STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}


def make_layout(layout: list[tuple[str, str]]) -> tuple[list[int], list[int], list[int]]:
    offsets, types, flags, off = [], [], [], 0
    for type_name, word_order in layout:
        code = pure.TYPE_CODES[type_name]
        offsets.append(off)
        types.append(code)
        flags.append(pure.order_flags(word_order, "big"))
        off += pure.TYPE_WORDS[code]
    return offsets, types, flags


def make_stream(layout: list[tuple[str, str]], n: int, seed: int = 1) -> bytes:
    """N fc 3 responses; register values are the layout's types packed from random numbers."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        block = bytearray()
        for type_name, word_order in layout:
            if type_name.startswith("float"):
                value: float | int = float(rng.normal(100.0, 50.0))
            else:
                bits = 16 if type_name.endswith("16") else 32
                lo = -(2 ** (bits - 1)) if type_name.startswith("int") else 0
                value = int(rng.integers(lo, lo + 2**bits))
            raw = struct.pack(">" + STRUCT[type_name], value)
            words = [raw[j : j + 2] for j in range(0, len(raw), 2)]
            block += b"".join(reversed(words) if word_order == "little" else words)
        frames.append(struct.pack(">HHHBBB", i & 0xFFFF, 0, 3 + len(block), 1, 3, len(block)))
        frames.append(bytes(block))
    return b"".join(frames)


def measure(fn: Callable[[], int], repeats: int, min_time: float) -> float:
    """Median frames/s of ``fn`` (which returns frames decoded), each sample at least min_time."""
    loops, samples = 1, []
    while True:  # calibrate
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - t0 >= min_time or loops >= 1 << 20:
            break
        loops *= 2
    for _ in range(repeats):
        t0 = time.perf_counter()
        frames = sum(fn() for _ in range(loops))
        samples.append(frames / (time.perf_counter() - t0))
    return statistics.median(samples)


def stream_path(mod: ModuleType, dec: Any, stream: bytes, n: int, n_points: int):
    out, tids = np.empty((n, n_points)), np.empty(n, np.uint16)
    return (lambda: mod.decode_stream(stream, dec, out, tids)), out


def framer_path(mod: ModuleType, dec: Any, stream: bytes, n: int, n_points: int):
    out = np.empty((n, n_points))
    view = memoryview(stream)

    def run() -> int:
        framer, i = mod.MbapFramer(), 0
        for start in range(0, len(stream), 4096):  # recv()-sized chunks
            for _tid, _unit, _fc, body in framer.feed(view[start : start + 4096]):
                dec.decode(memoryview(body)[1:], out[i])
                i += 1
        return i

    return run, out


def pymodbus_path(layout: list[tuple[str, str]], stream: bytes, n: int, scales, biases):
    from pymodbus.client.mixin import ModbusClientMixin
    from pymodbus.framer import FramerSocket
    from pymodbus.pdu import DecodePDU

    dt = ModbusClientMixin.DATATYPE
    convert: Any = ModbusClientMixin.convert_from_registers
    offsets, types, _ = make_layout(layout)
    spec = [
        (off, off + pure.TYPE_WORDS[t], getattr(dt, name.upper()), order, s, b)
        for off, t, (name, order), s, b in zip(offsets, types, layout, scales, biases, strict=True)
    ]
    out = np.empty((n, len(layout)))

    def run() -> int:
        framer = FramerSocket(DecodePDU(False))
        pos, i, end = 0, 0, len(stream)
        while pos < end:
            # The transport hands the framer its receive buffer; one PDU comes back per call.
            used, pdu = framer.handleFrame(stream[pos : pos + 264], 0, 0)
            if not used or pdu is None:
                break
            pos += used
            regs = pdu.registers
            out[i] = [
                convert(regs[a:b], datatype, word_order=order) * s + bias
                for a, b, datatype, order, s, bias in spec
            ]
            i += 1
        return i

    return run, out


def bench_case(label: str, layout: list[tuple[str, str]], n: int, repeats: int, min_time: float):
    native: ModuleType | None
    try:
        native = importlib.import_module("gateway._native.modbus")
    except ImportError:
        native = None
        print("  (compiled gateway._native.modbus not built: run setup.py build_ext --inplace)")
    offsets, types, flags = make_layout(layout)
    n_points = len(layout)
    rng = np.random.default_rng(2)
    scales = [float(x) for x in rng.choice([1.0, 0.1, 0.01, 2.5], n_points)]
    biases = [float(x) for x in rng.choice([0.0, -40.0, 10.0], n_points)]
    stream = make_stream(layout, n)
    regs = pure.RegisterDecoder(offsets, types, flags, scales, biases).min_registers
    print(
        f"\n{label}: {n} fc3 responses x {regs} registers, {n_points} points, {len(stream)} bytes"
    )
    paths: dict[str, tuple[Callable[[], int], np.ndarray]] = {}
    for tag, mod in (("compiled", native), ("pure", pure)):
        if mod is None:
            continue
        dec = mod.RegisterDecoder(offsets, types, flags, scales, biases)
        paths[f"{tag} decode_stream"] = stream_path(mod, dec, stream, n, n_points)
        paths[f"{tag} MbapFramer+decode"] = framer_path(mod, dec, stream, n, n_points)
    paths["pymodbus 3.16.1"] = pymodbus_path(layout, stream, n, scales, biases)
    rates: dict[str, float] = {}
    reference = None
    for name, (fn, out) in paths.items():
        assert fn() == n, f"{name} did not decode all {n} frames"
        if reference is None:
            reference = out.copy()
        # Like-for-like: every path must produce the same values from the same bytes.
        assert np.allclose(out, reference, rtol=1e-12, equal_nan=True), f"{name} disagrees"
        rates[name] = measure(fn, repeats, min_time)
        print(f"  {name:<30} {rates[name]:>14,.0f} frames/s")
    base = rates["pymodbus 3.16.1"]
    for name in rates:
        if name.startswith("compiled"):
            pure_name = name.replace("compiled", "pure")
            print(
                f"  ratio {name}: x{rates[name] / base:,.1f} vs pymodbus, "
                f"x{rates[name] / rates[pure_name]:,.1f} vs {pure_name}"
            )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few-second smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n10, n125, min_time = (300, 60, 0.02) if args.quick else (5000, 1000, 0.25)
    print(f"median of {args.repeats} repeats (frames/s, higher is better)")
    bench_case("10 registers", LAYOUT_10, n10, args.repeats, min_time)
    bench_case("125 registers", LAYOUT_125, n125, args.repeats, min_time)


if __name__ == "__main__":
    main()
