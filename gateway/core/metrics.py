"""Process metrics in the Prometheus text format, and a rate meter for live displays."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]


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
        for name in sorted(rows):
            full = self.prefix + name
            kind, text = self._help.get(
                name, ("counter" if name.endswith("_total") else "gauge", "")
            )
            if text:
                lines.append(f"# HELP {full} {text}")
            lines.append(f"# TYPE {full} {kind}")
            for labels, value in rows[name]:
                v = "NaN" if math.isnan(value) else repr(float(value))
                lines.append(f"{full}{_fmt_labels(labels)} {v}")
        return "\n".join(lines) + "\n"


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
