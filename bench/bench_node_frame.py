"""Node frames: compiled NodeFrameParser + decode_readings vs the pure-Python twin.

N READINGS frames of 8 readings each (float32, uint16, bool) from 16 nodes, as the driver
receives them: one datagram per frame, ``feed`` per datagram, then ``decode_readings`` per
accepted frame into typed columns. Since node frame format 2 each frame carries an
HMAC-SHA256-128 tag and a replay counter that the parser verifies (the MAC cost); the compiled
parser computes SHA-256 in C, the twin through ``hmac.digest`` (OpenSSL).

Prints frames/s medians and the compiled / pure ratio. ``--quick`` is a few-second smoke run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_modbus_decode import measure  # noqa: E402

from gateway._pure import node_frame as pure  # noqa: E402

NODES = 16
EPOCH = 0x5EED0001


def key_of(node: int) -> bytes:
    return bytes((node + i) & 0xFF for i in range(32))


def make_frames(n: int) -> list[bytes]:
    rng = np.random.default_rng(5)
    frames = []
    for i in range(n):
        node = i % NODES
        readings = [(c, pure.V_FLOAT32, float(rng.normal())) for c in range(5)]
        readings += [(5, pure.V_UINT16, float(i & 0xFFFF)), (6, pure.V_BOOL, 1.0),
                     (7, pure.V_FLOAT32, 1.5)]  # fmt: skip
        payload = pure.encode_readings(readings)
        counter = i // NODES + 1
        frames.append(pure.encode_frame(pure.T_READINGS, node, counter & 0xFFFF, payload,
                                        key=key_of(node), epoch=EPOCH, counter=counter, up=True))  # fmt: skip
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few-second smoke run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, min_time = (2000, 0.02) if args.quick else (20000, 0.25)
    frames = make_frames(n)
    mods: list[tuple[str, Any]] = [("pure", pure)]
    try:
        mods.insert(0, ("compiled", importlib.import_module("gateway._native.node_frame")))
    except ImportError:
        print("compiled gateway._native.node_frame not built; run setup.py build_ext --inplace")
    rates: dict[str, float] = {}
    for tag, mod in mods:
        ch, vals = np.empty(255, np.uint8), np.empty(255)

        def run(mod: Any = mod, ch: Any = ch, vals: Any = vals) -> int:
            # A fresh parser each run: the replay window would refuse the second pass.
            parser = mod.NodeFrameParser()
            for node in range(NODES):
                parser.set_key(node, key_of(node))
                parser.expect(node, EPOCH)
            decode, feed, got = mod.decode_readings, parser.feed, 0
            for f in frames:
                for fr in feed(f):
                    got += decode(fr[-1], ch, vals) > 0
            assert got == n, (got, n)
            return n

        rates[tag] = measure(run, args.repeats, min_time)
    print(f"node frames, {n} READINGS frames (8 readings, HMAC-SHA256-128); median of "
          f"{args.repeats} (frames/s)")  # fmt: skip
    for name, r in rates.items():
        print(f"  {name:10s} {r:14,.0f}")
    if "compiled" in rates:
        print(f"  ratio compiled / pure: x{rates['compiled'] / rates['pure']:,.1f}")


if __name__ == "__main__":
    main()
