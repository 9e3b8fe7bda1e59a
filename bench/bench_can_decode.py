"""CAN signal decoding: compiled SignalDecoder vs pure twin vs python-can + cantools per frame.

N frames of four DBC messages (J1939 EEC1 with 2 signals, an 11-bit Motorola message, a
message with four 16-bit signals, and one unknown id), each decoded into engineering values:

* compiled, from raw SocketCAN ``struct can_frame`` bytes (the driver's socketcan path:
  ``socketcan_columns`` views them as typed columns, ``SignalDecoder.decode`` extracts),
* compiled ``SignalDecoder.decode`` alone over ready columns,
* compiled from python-can ``Message`` objects (the driver's path on other interfaces),
* the pure-Python twin,
* python-can + cantools per frame: python-can's SocketCAN frame dissection and ``Message``,
  then ``Database.decode_message`` (the usual Python stack), from the same raw bytes.

Prints frames/s medians and ratios. ``--quick`` is a few-second smoke run.
"""

from __future__ import annotations

import argparse
import importlib
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_modbus_decode import measure  # noqa: E402

from gateway._pure import can as pure  # noqa: E402

DBC = """VERSION ""

BO_ 2364540158 EEC1: 8 Vector__XXX
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX
 SG_ Torque : 16|8@1+ (1,-125) [-125|125] "%" Vector__XXX

BO_ 100 MOTOR: 8 Vector__XXX
 SG_ Temp : 7|12@0- (0.5,-10) [-1034|1013] "degC" Vector__XXX

BO_ 2566834942 WHEELS: 8 Vector__XXX
 SG_ FL : 0|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
 SG_ FR : 16|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
 SG_ RL : 32|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
 SG_ RR : 48|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
"""


def main() -> None:
    import can
    import cantools

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few-second smoke run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, min_time = (2000, 0.02) if args.quick else (20000, 0.25)
    db = cantools.database.load_string(DBC, "dbc")
    layout, pid = [], 0
    for msg in db.messages:
        key = msg.frame_id | (0x80000000 if msg.is_extended_frame else 0)
        for sig in msg.signals:
            layout.append((key, sig.start, sig.length, sig.byte_order == "big_endian",
                           sig.is_signed, float(sig.scale), float(sig.offset), pid))  # fmt: skip
            pid += 1
    rng = np.random.default_rng(3)
    kinds = rng.integers(0, 4, n)
    ids_by_kind = [db.messages[0].frame_id, 100, db.messages[2].frame_id, 0x7EE]
    ext_by_kind = [True, False, True, False]
    payload = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    msgs = [can.Message(arbitration_id=ids_by_kind[k], is_extended_id=ext_by_kind[k],
                        data=bytes(payload[i]), timestamp=float(i)) for i, k in enumerate(kinds)]  # fmt: skip
    ids = np.array([m.arbitration_id | (0x80000000 if m.is_extended_id else 0) for m in msgs],
                   np.uint32)  # fmt: skip
    dlc = np.full(n, 8, np.uint8)
    # What SocketCAN hands over: 16-byte struct can_frame per frame, here back to back as the
    # driver's RawSocketCanReader stores them.
    wire = b"".join(struct.pack("<IB3x8s", int(ids[i]), 8, bytes(payload[i])) for i in range(n))
    cap = n * 4
    paths: dict[str, Any] = {}
    mods: list[tuple[str, Any]] = [("pure", pure)]
    try:
        mods.insert(0, ("compiled", importlib.import_module("gateway._native.can")))
    except ImportError:
        print("compiled gateway._native.can not built; run setup.py build_ext --inplace")
    for tag, mod in mods:
        dec = mod.SignalDecoder(layout)
        rows, pts, vals = np.empty(cap, np.uint32), np.empty(cap, np.uint32), np.empty(cap)

        def columns(dec: Any = dec, rows: Any = rows, pts: Any = pts, vals: Any = vals) -> int:
            dec.decode(ids, payload, dlc, rows, pts, vals)
            return n

        paths[f"{tag} decode (columns)"] = columns
        if tag == "compiled":
            from gateway.drivers.can.device import FrameColumns

            cols = FrameColumns(n)

            def from_messages(dec: Any = dec, rows: Any = rows, pts: Any = pts,
                              vals: Any = vals, cols: Any = cols) -> int:  # fmt: skip
                k = cols.fill(msgs)
                dec.decode(cols.ids[:k], cols.data[:k], cols.dlc[:k], rows, pts, vals)
                return n

            paths["compiled fill+decode (Messages)"] = from_messages
            from gateway.drivers.can.device import socketcan_columns

            def from_wire(
                dec: Any = dec, rows: Any = rows, pts: Any = pts, vals: Any = vals
            ) -> int:
                w_ids, w_data, w_dlc = socketcan_columns(wire, n)
                dec.decode(w_ids, w_data, w_dlc, rows, pts, vals)
                return n

            paths["compiled raw can_frames (driver)"] = from_wire

    from can.interfaces.socketcan.socketcan import dissect_can_frame as dissect

    def cantools_run() -> int:
        # python-can's SocketCAN receive (dissect the frame, build a Message) + cantools decode.
        decode = db.decode_message
        for i in range(n):
            can_id, size, flags, data = dissect(wire[16 * i : 16 * i + 16])
            m = can.Message(arbitration_id=can_id & 0x1FFFFFFF, is_extended_id=bool(can_id >> 31),
                            data=data[:size], timestamp=0.0)  # fmt: skip
            try:
                decode(m.arbitration_id, m.data)
            except KeyError:  # unknown id
                pass
        return n

    paths["python-can + cantools"] = cantools_run
    rates = {name: measure(fn, args.repeats, min_time) for name, fn in paths.items()}
    print(f"CAN decode, {n} frames (4 message kinds, 7 signals); median of {args.repeats} "
          "(frames/s)")  # fmt: skip
    for name, r in rates.items():
        print(f"  {name:34s} {r:14,.0f}")
    base = rates["python-can + cantools"]
    for name, r in rates.items():
        if name != "python-can + cantools":
            print(f"  ratio {name}: x{r / base:,.1f} vs python-can + cantools")


if __name__ == "__main__":
    main()
