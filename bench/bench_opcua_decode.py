"""OPC UA notification decode: ours (compiled, pure) vs asyncua's decoder vs o6's, same bytes.

One PublishResponse of N monitored-item changes (Doubles with source and server timestamps,
built by asyncua's encoder, wrapped in a SecurityPolicy-None MSG chunk as read off the socket):

* ours, compiled: ``NotificationDecoder.decode_publish`` into typed columns (point, value,
  source/server time, quality), from the whole MSG chunk,
* ours, the pure-Python twin, same call,
* asyncua: ``struct_from_binary(ua.PublishResponse, ...)``, its client's decode of the body
  (Python objects only; turning them into columns would cost more on top),
* o6 (open62541 in C): ``o6.decodeBinary(body, PublishResponse)``, and the same plus reading each
  item's handle, value, timestamps and status (what our columns hold) from its objects.

Prints value changes/s medians and ratios against asyncua. Goal (issue 10): compiled ≥ 50×
asyncua. ``--quick`` is a few-second smoke run.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_modbus_decode import measure  # noqa: E402
from bench_opcua_messages import msg_chunk, publish_response, sample_values  # noqa: E402

from gateway._pure import opcua as pure  # noqa: E402


def ours(mod: Any, data: bytes, n: int) -> Callable[[], int]:
    dec = mod.NotificationDecoder([(h, h - 1) for h in range(1, n + 1)])
    cap = mod.max_rows(len(data))
    cols = (np.empty(cap, np.uint32), np.empty(cap), np.empty(cap), np.empty(cap),
            np.empty(cap, np.uint8))  # fmt: skip

    def run() -> int:
        return int(dec.decode_publish(data, *cols))

    assert run() == n
    return run


def o6_paths(body: bytes, n: int, repeats: int, min_time: float) -> dict[str, float]:
    """o6's rates, measured in a child: importing o6 starts its 10-minute licence timer."""
    code = f"""
import sys
sys.path[:0] = {[str(Path(__file__).resolve().parent)]!r}
import o6
from o6.ns import ns0
from bench_modbus_decode import measure
body = {body!r}[4:]  # o6 decodes the structure, after the type NodeId
PR = ns0.datatypes.PublishResponse

def decode():
    o6.decodeBinary(body, PR)
    return {n}

def columns():
    r = o6.decodeBinary(body, PR)
    rows = []
    for ext in r.notificationMessage.notificationData:
        for m in ext.body.monitoredItems:
            dv = m.value
            rows.append((m.clientHandle, float(dv.value), int(dv.sourceTimestamp),
                         int(dv.serverTimestamp), int(dv.status)))
    return len(rows)

assert columns() == {n}
print("RATES", measure(decode, {repeats}, {min_time}), measure(columns, {repeats}, {min_time}))
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300, check=True).stdout  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        print(f"  o6 not measured: {e}")
        return {}
    line = next(x for x in out.splitlines() if x.startswith("RATES"))
    decode, columns = (float(x) for x in line.split()[1:])
    return {"o6 decodeBinary (objects)": decode, "o6 decodeBinary + read items": columns}


def main() -> None:
    from asyncua import ua
    from asyncua.common.utils import Buffer
    from asyncua.ua import ua_binary

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few-second smoke run")
    ap.add_argument("--items", type=int, default=1000, help="monitored items per notification")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    min_time = 0.02 if args.quick else 0.25
    n = args.items
    body = publish_response(sample_values(n), sequence_number=5, available=[4, 5])
    chunk = msg_chunk(body)
    paths: dict[str, Callable[[], int]] = {}
    try:
        paths["ours, compiled"] = ours(importlib.import_module("gateway._native.opcua"), chunk, n)
    except ImportError:
        print("compiled gateway._native.opcua not built; run setup.py build_ext --inplace")
    paths["ours, pure twin"] = ours(pure, chunk, n)

    def theirs() -> int:
        resp = ua_binary.struct_from_binary(ua.PublishResponse, Buffer(body))
        return len(resp.Parameters.NotificationMessage.NotificationData[0].MonitoredItems)

    assert theirs() == n
    paths["asyncua struct_from_binary"] = theirs
    rates = {name: measure(fn, args.repeats, min_time) for name, fn in paths.items()}
    rates.update(o6_paths(body, n, args.repeats, min_time))
    print(f"OPC UA PublishResponse decode, {n} items ({len(chunk)} bytes); median of "
          f"{args.repeats} (value changes/s)")  # fmt: skip
    for name, r in rates.items():
        print(f"  {name:34s} {r:14,.0f}")
    base = rates["asyncua struct_from_binary"]
    for name, r in rates.items():
        if name != "asyncua struct_from_binary":
            print(f"  ratio {name}: x{r / base:,.1f} vs asyncua")
    if "o6 decodeBinary + read items" in rates and "ours, compiled" in rates:
        ratio = rates["ours, compiled"] / rates["o6 decodeBinary + read items"]
        print(f"  ratio ours, compiled: x{ratio:,.1f} vs o6 decodeBinary + read items")


if __name__ == "__main__":
    main()
