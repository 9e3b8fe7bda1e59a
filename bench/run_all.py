"""Run every benchmark in bench/ (each prints its own ratio against its reference)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = [
    "bench_modbus_decode.py",
    "bench_modbus_driver.py",
    "bench_rtu_decode.py",
    "bench_can_decode.py",
    "bench_opcua_decode.py",
    "bench_opcua_stacks.py",
    "bench_opcua_e2e.py",
    "bench_node_frame.py",
    "bench_rtu_serial.py",
    "bench_queue.py",
    "bench_uplink.py",
    "bench_cloud_ingest.py",
    "bench_ingest.py",
    "bench_rules.py",
    "bench_infer.py",
    "bench_e2e.py",
]


def main() -> int:
    here = Path(__file__).parent
    extra = sys.argv[1:]
    code = 0
    for name in BENCHES:
        print(f"=== {name} {' '.join(extra)}", flush=True)
        code |= subprocess.call([sys.executable, str(here / name), *extra])
    return code


if __name__ == "__main__":
    sys.exit(main())
