"""Modbus RTU response decoding: compiled vs pure twin vs pymodbus vs a C -O2 reference parser.

One byte stream of N back-to-back fc 3 RTU responses with 10 registers (2 float32 big and
little word order, 3 float32/int16/uint16 points: the TCP benchmark's 10-register layout) and
CRC-16, decoded into engineering values by:

* compiled ``decode_rtu_stream`` (CRC check + bulk decode into a 2-D float64 array),
* compiled ``RtuFramer.feed`` + ``RegisterDecoder.decode`` per frame (the driver's path),
* the pure-Python twin, both ways,
* pymodbus 3.16.1's client side: ``FramerRTU.handleFrame`` per response, then
  ``convert_from_registers`` per point with scale/offset,
* a small C parser compiled here with ``gcc -O2`` (table CRC, the same layout arrays, the same
  scale arithmetic), called once over the whole stream through ctypes: this machine's ceiling.

Prints frames/s medians and the ratios. ``--quick`` is a few-second smoke run.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_modbus_decode import LAYOUT_10, make_layout, make_stream, measure  # noqa: E402

from gateway._pure import modbus as pure  # noqa: E402

C_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <stddef.h>
static uint16_t table[256];
static void init(void) {
    for (int i = 0; i < 256; i++) {
        uint16_t c = (uint16_t)i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xA001 : c >> 1;
        table[i] = c;
    }
}
static uint16_t crc16(const uint8_t *p, size_t n) {
    uint16_t c = 0xFFFF;
    while (n--) c = (c >> 8) ^ table[(c ^ *p++) & 0xFF];
    return c;
}
static uint16_t word(const uint8_t *p, int byte_little) {
    return byte_little ? (uint16_t)(p[0] | p[1] << 8) : (uint16_t)(p[0] << 8 | p[1]);
}
/* types: 0 int16 1 uint16 2 int32 3 uint32 4 float32; flags bit0 word little, bit1 byte little */
long decode(const uint8_t *s, long n, double *out, long rows, int npts, const int *off,
            const int *type, const int *flags, const double *scale, const double *bias) {
    static int ready = 0;
    if (!ready) { init(); ready = 1; }
    long pos = 0, k = 0;
    while (k < rows && n - pos >= 5) {
        uint8_t unit = s[pos], fc = s[pos + 1], cnt = s[pos + 2];
        if (unit >= 1 && unit <= 247 && (fc == 3 || fc == 4) && cnt && !(cnt & 1)) {
            long len = 5 + cnt;
            if (pos + len > n) break;
            if (crc16(s + pos, len - 2) == (uint16_t)(s[pos + len - 2] | s[pos + len - 1] << 8)) {
                const uint8_t *r = s + pos + 3;
                for (int j = 0; j < npts; j++) {
                    const uint8_t *p = r + 2 * off[j];
                    int bl = flags[j] & 2, wl = flags[j] & 1;
                    double raw;
                    if (type[j] <= 1) {
                        uint16_t w = word(p, bl);
                        raw = type[j] == 0 ? (double)(int16_t)w : (double)w;
                    } else {
                        uint16_t a = word(p, bl), b = word(p + 2, bl);
                        uint32_t u = wl ? ((uint32_t)b << 16 | a) : ((uint32_t)a << 16 | b);
                        if (type[j] == 4) { float f; memcpy(&f, &u, 4); raw = f; }
                        else raw = type[j] == 2 ? (double)(int32_t)u : (double)u;
                    }
                    double prod = raw * scale[j];
                    out[k * npts + j] = prod + bias[j];
                }
                k++;
                pos += len;
                continue;
            }
        }
        pos++;
    }
    return k;
}
"""


def rtu_stream(n: int) -> bytes:
    """The TCP benchmark's 10-register responses, re-framed as RTU with CRC."""
    frames = []
    for _tid, unit, fc, body in pure.MbapFramer().feed(make_stream(LAYOUT_10, n)):
        head = bytes((unit or 1, fc)) + body
        frames.append(head + pure.crc16(head).to_bytes(2, "little"))
    return b"".join(frames)


def build_c(tmp: Path) -> Any:
    src, lib = tmp / "rtu_ref.c", tmp / "rtu_ref.so"
    src.write_text(C_SOURCE)
    # -ffp-contract=off: no fused multiply-add, so results equal the Python side bit for bit.
    cmd = ["gcc", "-O2", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(lib), str(src)]
    subprocess.run(cmd, check=True)
    c = ctypes.CDLL(str(lib))
    c.decode.restype = ctypes.c_long
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few-second smoke run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, min_time = (300, 0.02) if args.quick else (5000, 0.25)
    stream = rtu_stream(n)
    offsets, types, flags = make_layout(LAYOUT_10)
    npts = len(offsets)
    scales = [0.1 * (i + 1) for i in range(npts)]
    biases = [float(i) for i in range(npts)]
    paths: dict[str, Any] = {}
    mods: list[tuple[str, ModuleType]] = [("pure", pure)]
    try:
        mods.insert(0, ("compiled", importlib.import_module("gateway._native.modbus")))
    except ImportError:
        print("compiled gateway._native.modbus not built; run setup.py build_ext --inplace")
    outs: dict[str, np.ndarray] = {}
    for tag, mod in mods:
        dec = mod.RegisterDecoder(offsets, types, flags, scales, biases)
        out, units = np.empty((n, npts)), np.empty(n, np.uint8)
        paths[f"{tag} decode_rtu_stream"] = lambda mod=mod, dec=dec, out=out, units=units: (
            mod.decode_rtu_stream(stream, dec, out, units)
        )
        outs[f"{tag} decode_rtu_stream"] = out
        out2 = np.empty((n, npts))

        def framer(mod: ModuleType = mod, dec: Any = dec, out2: np.ndarray = out2) -> int:
            f, i, view = mod.RtuFramer("response"), 0, memoryview(stream)
            for start in range(0, len(stream), 4096):
                for _unit, _fc, body in f.feed(view[start : start + 4096]):
                    dec.decode(memoryview(body)[1:], out2[i])
                    i += 1
            return i

        paths[f"{tag} RtuFramer+decode"] = framer
        outs[f"{tag} RtuFramer+decode"] = out2

    from pymodbus.client.mixin import ModbusClientMixin
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU

    dt, convert = ModbusClientMixin.DATATYPE, ModbusClientMixin.convert_from_registers
    spec = [(o, o + pure.TYPE_WORDS[t], getattr(dt, name.upper()), order, s, b)
            for o, t, (name, order), s, b in zip(offsets, types, LAYOUT_10, scales, biases,
                                                  strict=True)]  # fmt: skip
    pm_out = np.empty((n, npts))

    flen = len(stream) // n  # every response here has the same length

    def pymodbus_run(chunk: int = flen) -> int:
        # Handed exactly one frame per call: with several frames in one read pymodbus 3.16.1's
        # RTU framer loses all but the first (printed below), so it gets its best case here.
        fr = FramerRTU(DecodePDU(False))
        pos, i, end = 0, 0, len(stream)
        while pos < end:
            used, pdu = fr.handleFrame(stream[pos : pos + chunk], 0, 0)
            if not used or pdu is None:
                break
            pos += used
            regs = pdu.registers
            pm_out[i] = [convert(regs[a:b], d, word_order=o) * s + bb  # type: ignore[arg-type]
                         for a, b, d, o, s, bb in spec]  # fmt: skip
            i += 1
        return i

    paths["pymodbus 3.16.1"] = pymodbus_run
    outs["pymodbus 3.16.1"] = pm_out
    with tempfile.TemporaryDirectory() as tmp:
        c = build_c(Path(tmp))
        arr = ctypes.c_int * npts
        c_off, c_type, c_flags = arr(*offsets), arr(*[{0: 0, 1: 1, 2: 2, 3: 3, 4: 4}[t]
                                                      for t in types]), arr(*flags)  # fmt: skip
        c_scale, c_bias = (ctypes.c_double * npts)(*scales), (ctypes.c_double * npts)(*biases)
        c_out = np.empty((n, npts))
        buf = ctypes.c_char_p(stream)
        outp = c_out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        paths["C -O2 reference"] = lambda: c.decode(buf, len(stream), outp, n, npts, c_off,
                                                    c_type, c_flags, c_scale, c_bias)  # fmt: skip
        outs["C -O2 reference"] = c_out
        rates = {}
        for name, fn in paths.items():
            got = fn()
            assert got == n, f"{name} decoded {got} of {n} frames"
            rates[name] = measure(fn, args.repeats, min_time)
    multi = pymodbus_run(4096)
    ref = outs["C -O2 reference"]
    for name, out in outs.items():
        np.testing.assert_allclose(out, ref, rtol=1e-12, err_msg=name)
    print(f"RTU fc 3, 10 registers + CRC, {n} frames; median of {args.repeats} (frames/s)")
    for name, r in rates.items():
        print(f"  {name:32s} {r:14,.0f}")
    print(f"  (pymodbus fed 4096-byte reads instead of single frames: {multi} of {n} decoded)")
    base, cref = rates["pymodbus 3.16.1"], rates["C -O2 reference"]
    for name in rates:
        if name.startswith("compiled"):
            print(f"  ratio {name}: x{rates[name] / base:,.1f} vs pymodbus, "
                  f"{100 * rates[name] / cref:.0f} % of C")  # fmt: skip


if __name__ == "__main__":
    main()
