"""Ring buffer: compiled (gateway._native.ringbuf) vs pure twin (gateway._pure.ringbuf), side by side.

Usage: ``python bench/bench_ringbuf.py [--quick]``. Prints the median time per operation of each
twin over several repeats and the speed-up (pure / native).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway._pure import ringbuf as pure  # noqa: E402

try:
    from gateway._native import ringbuf as native  # noqa: E402
except ImportError:
    sys.exit("gateway._native.ringbuf is not built: python setup.py -q build_ext --inplace")

CAPACITY = 4096


def median_time(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Median seconds per call over ``repeat`` runs of ``number`` calls."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number)
    return statistics.median(runs)


def cases(mod: ModuleType) -> dict[str, Callable[[], object]]:
    rb = mod.RingBuffer(CAPACITY)
    ts = np.arange(CAPACITY * 2, dtype=np.float64)
    vals = np.sin(ts)
    rb.extend(ts, vals)
    chunk_t, chunk_v = ts[:100], vals[:100]
    window = vals[:1024].copy()
    return {
        "push (1 sample)": lambda: rb.push(1.0, 2.0),
        "extend (100 samples)": lambda: rb.extend(chunk_t, chunk_v),
        "last(1024) views": lambda: rb.last(1024),
        "since(t0) views": lambda: rb.since(float(ts[-1000])),
        "stats(n=1024)": lambda: rb.stats(1024),
        "stats() full 4096": lambda: rb.stats(),
        "window_stats(1024)": lambda: mod.window_stats(window),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, a smoke test")
    args = parser.parse_args()
    number, repeat = (200, 3) if args.quick else (5000, 7)
    nat, pur = cases(native), cases(pure)
    print(f"ring capacity {CAPACITY}; median of {repeat} x {number} calls")
    print(f"{'operation':24} {'native':>12} {'pure':>12} {'pure/native':>12}")
    for name in nat:
        tn = median_time(nat[name], number, repeat)
        tp = median_time(pur[name], number, repeat)
        print(f"{name:24} {tn * 1e9:10.0f}ns {tp * 1e9:10.0f}ns {tp / tn:11.1f}x")


if __name__ == "__main__":
    main()
