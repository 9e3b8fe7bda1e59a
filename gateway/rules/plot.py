"""Timeline plot of a rule replay: why did a rule fire?

One panel per signal the rules read (samples as a line, bad samples as red ticks), with the
thresholds of the rules' comparisons as dashed lines and the derived values the rules compare
(windows such as ``rms(m.v, 10s)``) as their own lines; below, one lane per rule with its active
periods shaded from raise to clear, the ``for:`` hold before each firing hatched, and writes,
sets, events and logs marked. Needs matplotlib (optional extra ``plot``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from gateway.rules.effects import (  # noqa: E402
    AlarmCleared,
    AlarmRaised,
    EventRaised,
    LogMessage,
    PointSet,
    WriteRequest,
)
from gateway.rules.nodes import Compare, Const, PointRef, children  # noqa: E402
from gateway.rules.replay import Replay  # noqa: E402
from gateway.timefmt import is_relative  # noqa: E402

MAX_PANELS = 6
_EPOCH_DAYS = float(mdates.date2num(datetime(1970, 1, 1, tzinfo=timezone.utc)))


class _Axis:
    """Sample time -> x: matplotlib dates (UTC, shown as readable times) for epoch recordings,
    plain seconds for hand-written ones that start near 0."""

    def __init__(self, relative: bool) -> None:
        self.relative = relative
        self.scale = 1.0 if relative else 1.0 / 86400.0

    def __call__(self, ts: float) -> float:
        return ts if self.relative else ts / 86400.0 + _EPOCH_DAYS

    def span(self, seconds: float) -> float:
        return seconds * self.scale

    def label(self, ax: plt.Axes, legend: str) -> None:
        if self.relative:
            ax.set_xlabel(f"time [s]  ({legend})")
            return
        loc = mdates.AutoDateLocator(tz=timezone.utc)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz=timezone.utc))
        ax.set_xlabel(f"time (UTC)  ({legend})")


def _thresholds(result: Replay) -> dict[str, list[tuple[float, str]]]:
    """point or derived label -> [(constant, "rule: op")] from the rules' comparisons."""
    from gateway.rules.nodes import to_text

    out: dict[str, list[tuple[float, str]]] = defaultdict(list)
    if result.engine is None:
        return out

    from gateway.rules.compiler import EvalContext, _Builder

    fold = _Builder(EvalContext([]), []).const

    def walk(node: object, rule: str) -> None:
        if isinstance(node, Compare):
            for side, other in ((node.left, node.right), (node.right, node.left)):
                is_const, value = fold(other)
                if is_const and isinstance(value, int | float) and not isinstance(side, Const):
                    label = side.name if isinstance(side, PointRef) else to_text(side)
                    out[label].append((float(value), f"{rule}: {node.op} {float(value):g}"))
        for child in children(node):  # type: ignore[arg-type]
            walk(child, rule)

    for rule in result.engine._rules:
        for expr in rule.exprs[:2]:
            walk(expr.tree, rule.name)
    return out


def plot_replay(result: Replay, path: str | Path) -> None:
    """Write the timeline of ``result`` to ``path`` (PNG)."""
    engine = result.engine
    x = _Axis(is_relative(max((r[0] for r in result.rows), default=0.0)))
    series: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    bad: dict[str, list[float]] = defaultdict(list)
    for ts, name, value, q in sorted(result.rows, key=lambda r: r[0]):
        if q == 0:
            series[name][0].append(x(ts))
            series[name][1].append(value)
        else:
            bad[name].append(x(ts))
    read: list[str] = []
    if engine is not None:
        names = [i.name for i in engine._points.infos]
        for rule in engine._rules:
            for pid in rule.value_ids:
                if names[pid] not in read and (names[pid] in series or names[pid] in bad):
                    read.append(names[pid])
    panels = (read or list(series))[:MAX_PANELS]
    rules = engine.rule_names if engine is not None else []
    thresholds = _thresholds(result)
    fig, axes = plt.subplots(
        len(panels) + 1, 1, sharex=True, figsize=(12, 2.3 * len(panels) + 0.5 + 0.4 * len(rules)),
        gridspec_kw={"height_ratios": [3] * len(panels) + [max(1, len(rules)) * 0.6]},
        squeeze=False,
    )  # fmt: skip
    axes = axes[:, 0]
    for ax, name in zip(axes, panels, strict=False):
        t, v = series[name]
        ax.plot(t, v, lw=0.8, label=name, color="tab:gray", alpha=0.8)
        colors = iter(["tab:purple", "tab:blue", "tab:brown", "tab:olive", "tab:cyan"] * 4)
        for label, (point, pts) in result.probes.items():
            if point == name and pts:
                ax.plot([x(p[0]) for p in pts], [p[1] for p in pts], lw=2, label=label,
                        color=next(colors))  # fmt: skip
                for level, text in thresholds.get(label, []):
                    ax.axhline(level, ls="--", lw=0.9, color="tab:red")
                    ax.annotate(text, (0.995, level), xycoords=("axes fraction", "data"),
                                ha="right", va="top" if "<" in text else "bottom", fontsize=7,
                                color="tab:red")  # fmt: skip
        for level, text in thresholds.get(name, []):
            ax.axhline(level, ls="--", lw=0.9, color="tab:orange")
            ax.annotate(text, (0.005, level), xycoords=("axes fraction", "data"),
                        ha="left", va="top" if "<" in text else "bottom", fontsize=7,
                        color="tab:orange")  # fmt: skip
        for ts in bad.get(name, []):
            ax.axvline(ts, color="red", alpha=0.25, lw=0.8)
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
    lane = axes[-1]
    holds = {r.name: r.hold for r in engine._rules} if engine is not None else {}
    open_at: dict[str, float] = {}
    end = x(max((r[0] for r in result.rows), default=1.0))
    y = {name: i for i, name in enumerate(rules)}
    for eff in result.effects:
        row = y.get(eff.rule, -1)
        at = x(eff.ts)
        if isinstance(eff, AlarmRaised):
            open_at[eff.rule] = at
            for ax in axes[:-1]:
                ax.axvline(at, color="tab:red", lw=1, alpha=0.7)
            if holds.get(eff.rule):
                hold = x.span(holds[eff.rule])
                lane.barh(row, hold, left=at - hold, height=0.5,
                          color="none", edgecolor="tab:red", hatch="///")  # fmt: skip
            lane.annotate(eff.message[:60], (at, row + 0.3), fontsize=7)
        elif isinstance(eff, AlarmCleared) and eff.rule in open_at:
            start = open_at.pop(eff.rule)
            lane.barh(row, at - start, left=start, height=0.5, color="tab:red", alpha=0.5)
            for ax in axes[:-1]:
                ax.axvline(at, color="tab:green", lw=1, alpha=0.7)
        else:
            marker = {WriteRequest: "v", PointSet: "s", EventRaised: "*", LogMessage: "o"}
            m = marker.get(type(eff), "x")
            lane.plot([at], [row], marker=m, color="black", ms=6)
    for name, start in open_at.items():
        lane.barh(y[name], end - start, left=start, height=0.5, color="tab:red", alpha=0.5)
    lane.set_yticks(range(len(rules)), rules, fontsize=8)
    lane.set_ylim(-0.7, max(len(rules), 1) - 0.3)
    x.label(lane, "red bar: active, hatched: for-hold; v write, s set, * event, o log")
    lane.grid(alpha=0.3)
    fig.suptitle(f"rule replay: {len(result.rows)} samples, {len(result.effects)} effects")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
