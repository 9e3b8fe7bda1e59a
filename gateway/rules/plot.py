"""Timeline plot of a rule replay: why did a rule fire?

One panel per signal the rules read (samples as a line, bad samples as red ticks), with the
thresholds of the rules' comparisons as dashed lines and the derived values the rules compare
(windows such as ``rms(m.v, 10s)``) as their own lines; below, one lane per rule with its active
periods shaded from raise to clear, the ``for:`` hold before each firing hatched, and writes,
sets, events and logs marked. Needs matplotlib (optional extra ``plot``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
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

MAX_PANELS = 6


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
    series: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    bad: dict[str, list[float]] = defaultdict(list)
    for ts, name, value, q in result.rows:
        if q == 0:
            series[name][0].append(ts)
            series[name][1].append(value)
        else:
            bad[name].append(ts)
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
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=2, label=label,
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
    end = result.rows[-1][0] if result.rows else 1.0
    y = {name: i for i, name in enumerate(rules)}
    for eff in result.effects:
        row = y.get(eff.rule, -1)
        if isinstance(eff, AlarmRaised):
            open_at[eff.rule] = eff.ts
            for ax in axes[:-1]:
                ax.axvline(eff.ts, color="tab:red", lw=1, alpha=0.7)
            if holds.get(eff.rule):
                lane.barh(row, holds[eff.rule], left=eff.ts - holds[eff.rule], height=0.5,
                          color="none", edgecolor="tab:red", hatch="///")  # fmt: skip
            lane.annotate(eff.message[:60], (eff.ts, row + 0.3), fontsize=7)
        elif isinstance(eff, AlarmCleared) and eff.rule in open_at:
            start = open_at.pop(eff.rule)
            lane.barh(row, eff.ts - start, left=start, height=0.5, color="tab:red", alpha=0.5)
            for ax in axes[:-1]:
                ax.axvline(eff.ts, color="tab:green", lw=1, alpha=0.7)
        else:
            marker = {WriteRequest: "v", PointSet: "s", EventRaised: "*", LogMessage: "o"}
            m = marker.get(type(eff), "x")
            lane.plot([eff.ts], [row], marker=m, color="black", ms=6)
    for name, start in open_at.items():
        lane.barh(y[name], end - start, left=start, height=0.5, color="tab:red", alpha=0.5)
    lane.set_yticks(range(len(rules)), rules, fontsize=8)
    lane.set_ylim(-0.7, max(len(rules), 1) - 0.3)
    lane.set_xlabel(
        "time [s]  (red bar: active, hatched: for-hold; v write, s set, * event, o log)"
    )
    lane.grid(alpha=0.3)
    fig.suptitle(f"rule replay: {len(result.rows)} samples, {len(result.effects)} effects")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
