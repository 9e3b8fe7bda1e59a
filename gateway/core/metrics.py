"""Process metrics in the Prometheus text format, and a rate meter for live displays.

Conventions (https://prometheus.io/docs/practices/naming/): counters end ``_total``, durations
are seconds, every family has ``# HELP`` and ``# TYPE``, latencies are histograms; the
``process_*`` families and ``gateway_build_info`` are the ones every exporter has.
"""

from __future__ import annotations

import bisect
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence

Labels = tuple[tuple[str, str], ...]
#: One histogram series: labels, bucket bounds, counts per bucket (+Inf last), sum, count.
HistogramRow = tuple[Labels, Sequence[float], Sequence[float], float, float]


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"


class Metrics:
    """A registry of counters plus gauges collected on demand.

    Counters are incremented on the hot path (a dict update); gauges are read from the stages by
    collector callbacks only when ``/metrics`` is scraped, so an idle scrape costs the data path nothing.
    """

    def __init__(self, prefix: str = "gateway_") -> None:
        self.prefix = prefix
        self._counters: dict[tuple[str, Labels], float] = {}
        self._help: dict[str, tuple[str, str]] = {}
        self._collectors: list[Callable[[], Iterable[tuple[str, Labels, float]]]] = []
        self._hists: dict[str, tuple[tuple[float, ...], dict[Labels, list[float]]]] = {}
        self._sources: dict[str, Callable[[], Iterable[HistogramRow]]] = {}
        #: HELP text of families nobody described (every family gets one).
        self.help_for: Callable[[str], str] = lambda name: name.replace("_", " ")

    def histogram(self, name: str, text: str, buckets: Iterable[float]) -> None:
        """Declare histogram ``name`` (seconds) with upper bounds ``buckets``."""
        self._help[name] = ("histogram", text)
        self._hists[name] = (tuple(sorted(buckets)), {})

    def histogram_source(
        self, name: str, text: str, fn: Callable[[], Iterable[HistogramRow]]
    ) -> None:
        """Histogram ``name`` kept elsewhere (a stage's own counts), read at scrape time."""
        self._help[name] = ("histogram", text)
        self._sources[name] = fn

    def observe(self, name: str, value: float, labels: Labels = ()) -> None:
        """One observation: a bisect and three additions (cheap enough for a request path)."""
        bounds, series = self._hists[name]
        row = series.get(labels)
        if row is None:
            row = series[labels] = [0.0] * (len(bounds) + 3)  # buckets, +Inf, sum, count
        row[bisect.bisect_left(bounds, value)] += 1
        row[-2] += value
        row[-1] += 1

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, labels: Labels = ()) -> None:
        key = (name, labels)
        self._counters[key] = self._counters.get(key, 0.0) + amount

    def get(self, name: str, labels: Labels = ()) -> float:
        return self._counters.get((name, labels), 0.0)

    def add_collector(self, fn: Callable[[], Iterable[tuple[str, Labels, float]]]) -> None:
        """``fn`` yields ``(gauge name, labels, value)`` at scrape time."""
        self._collectors.append(fn)

    def render(self) -> str:
        rows: dict[str, list[tuple[Labels, float]]] = {}
        for (name, labels), value in self._counters.items():
            rows.setdefault(name, []).append((labels, value))
        for fn in self._collectors:
            for name, labels, value in fn():
                rows.setdefault(name, []).append((labels, value))
        lines = []
        for name in sorted(set(rows) | set(self._hists) | set(self._sources)):
            if name in self._hists or name in self._sources:
                lines.extend(self._render_histogram(name))
                continue
            full = self.prefix + name
            kind, text = self._help.get(
                name, ("counter" if name.endswith("_total") else "gauge", "")
            )
            text = (text or self.help_for(name)).replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {full} {text}")
            lines.append(f"# TYPE {full} {kind}")
            for labels, value in rows[name]:
                v = "NaN" if math.isnan(value) else repr(float(value))
                lines.append(f"{full}{_fmt_labels(labels)} {v}")
        lines.extend(process_metrics())
        return "\n".join(lines) + "\n"

    def _render_histogram(self, name: str) -> list[str]:
        full = self.prefix + name
        if name in self._hists:
            bounds_, series = self._hists[name]
            rows: Iterable[HistogramRow] = [
                (labels, bounds_, row[:-2], row[-2], row[-1]) for labels, row in series.items()
            ]
        else:
            rows = self._sources[name]()
        lines = [f"# HELP {full} {self._help[name][1]}", f"# TYPE {full} histogram"]
        for labels, bounds, counts, total, count in rows:
            cum = 0.0
            for le, n in zip((*bounds, math.inf), counts, strict=True):
                cum += n
                le_s = "+Inf" if le == math.inf else repr(float(le))
                lines.append(f"{full}_bucket{_fmt_labels((*labels, ('le', le_s)))} {cum!r}")
            lines.append(f"{full}_sum{_fmt_labels(labels)} {float(total)!r}")
            lines.append(f"{full}_count{_fmt_labels(labels)} {float(count)!r}")
        return lines


_START = time.time()


def _start_time() -> float:
    """Process start (epoch seconds) from /proc; the import time where there is no /proc."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(x.split()[1]) for x in f if x.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _START


START_TIME = _start_time()


def process_metrics() -> list[str]:
    """The standard ``process_*`` families (read at scrape time only)."""
    t = os.times()
    out = [
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {t.user + t.system!r}",
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {START_TIME!r}",
    ]
    try:
        with open("/proc/self/statm") as f:
            pages = f.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        out += [
            "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {float(int(pages[1]) * page)!r}",
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.",
            "# TYPE process_virtual_memory_bytes gauge",
            f"process_virtual_memory_bytes {float(int(pages[0]) * page)!r}",
            "# HELP process_open_fds Number of open file descriptors.",
            "# TYPE process_open_fds gauge",
            f"process_open_fds {float(len(os.listdir('/proc/self/fd')))!r}",
        ]
    except (OSError, ValueError, IndexError):
        pass
    return out


def build_info_labels() -> Labels:
    from gateway import __version__

    return (
        ("version", str(__version__)),
        ("python", platform.python_version()),
        ("implementation", sys.implementation.name),
    )


class RateMeter:
    """Events per second over a sliding interval, fed with counts and an injected clock."""

    def __init__(self, clock: Callable[[], float], interval: float = 2.0) -> None:
        self._clock = clock
        self._interval = interval
        self._t0 = clock()
        self._count = 0.0
        self._rate = 0.0

    def add(self, n: float) -> None:
        self._count += n
        self._roll()

    def _roll(self) -> None:
        now = self._clock()
        dt = now - self._t0
        if dt >= self._interval:
            self._rate = self._count / dt
            self._count = 0.0
            self._t0 = now

    @property
    def rate(self) -> float:
        self._roll()
        return self._rate
