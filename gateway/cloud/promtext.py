"""Prometheus text exposition for the cloud receiver: families, a histogram, process metrics.

Kept apart from the gateway's :mod:`gateway.core.metrics` (a counter registry tuned for the
runtime's hot path): the receiver's numbers already live in its own counters, so here they are
only rendered, at scrape time, with ``# HELP``/``# TYPE`` lines and the conventional names
(``_total`` counters, base units, ``_bucket``/``_sum``/``_count`` histograms, ``process_*`` and a
``build_info`` gauge).
"""

from __future__ import annotations

import bisect
import math
import os
import platform
import resource
import time
from collections.abc import Iterable, Sequence

Labels = tuple[tuple[str, str], ...]

#: Commit latency buckets (seconds): an fsync on flash is 1-20 ms, a busy disk 100 ms and more.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Cumulative buckets of observed values (Prometheus semantics; +Inf implied)."""

    def __init__(self, buckets: Sequence[float] = COMMIT_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class Exposition:
    """One scrape's text: add families in any order, :meth:`text` renders them."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self, name: str, kind: str, text: str, samples: Iterable[tuple[Labels, float]]
    ) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_value(value)}")

    def one(self, name: str, kind: str, text: str, value: float) -> None:
        self.family(name, kind, text, [((), value)])

    def histogram(self, name: str, text: str, hist: Histogram) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(text)}")
        self._lines.append(f"# TYPE {name} histogram")
        running = 0
        for bound, n in zip((*hist.bounds, math.inf), hist.counts, strict=True):
            running += n
            le = "+Inf" if math.isinf(bound) else repr(float(bound))
            self._lines.append(f'{name}_bucket{{le="{le}"}} {running}')
        self._lines.append(f"{name}_sum {_value(hist.sum)}")
        self._lines.append(f"{name}_count {hist.count}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def process_metrics(out: Exposition, version: str) -> None:
    """The standard ``process_*`` families (Linux: from /proc) and ``<prefix>build_info``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.one("process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.",
            usage.ru_utime + usage.ru_stime)  # fmt: skip
    rss, vms = _memory()
    if rss is not None:
        out.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss)
    if vms is not None:
        out.one("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vms)
    out.one("process_start_time_seconds", "gauge",
            "Start time of the process since unix epoch in seconds.", _START)  # fmt: skip
    fds = _open_fds()
    if fds is not None:
        out.one("process_open_fds", "gauge", "Number of open file descriptors.", fds)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        out.one("process_max_fds", "gauge", "Maximum number of open file descriptors.", soft)
    out.family(
        "gateway_cloud_build_info", "gauge",
        "The receiver's version and Python (always 1).",
        [((("version", version), ("python", platform.python_version())), 1)],
    )  # fmt: skip


def _memory() -> tuple[float | None, float | None]:
    try:
        with open("/proc/self/statm") as f:
            vms_pages, rss_pages = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        return None, None
    page = os.sysconf("SC_PAGE_SIZE")
    return float(rss_pages * page), float(vms_pages * page)


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _start_time() -> float:
    """When this process started (wall clock), from /proc; import time elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_START = _start_time()


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), chr(92) + "n")}"'  # noqa: E501
        for k, v in labels
    )
    return "{" + inner + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, float) and math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if isinstance(v, float) else str(int(v))
