"""What the demo shows: a live screen that fits the terminal, or one plain line per event.

The screen is built as plain-text lines first and cut to the terminal's width and height
(``shutil.get_terminal_size``) before any colour is added, so a line never wraps and a frame
never scrolls, down to 80x24. ``--plain`` (and any stdout that is not a terminal) prints what
changed as it happens: alarms, writes, rule logs, device connections, the uplink link, the
press's run coil, and a one-line summary every ``SUMMARY_EVERY`` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

SUMMARY_EVERY = 30.0
RED, GREEN, YELLOW, BOLD = "31", "32", "33", "1"


def _fmt_ts(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "--:--:--"


@dataclass
class ModelLabels:
    """What the screen shows of the information model: point labels by asset
    (``press1.temperature``) and the tree in one line (``factory/line1: press1 pump1``)."""

    labels: dict[str, str] = field(default_factory=dict)
    tree: str = ""

    @classmethod
    def of(cls, assets: Any) -> ModelLabels:
        from gateway.model.assets import walk

        labels: dict[str, str] = {}
        groups: dict[str, list[str]] = {}
        for path, asset in walk(assets.roots if assets else ()):
            for p in asset.points:
                labels[p.point] = f"{asset.id}.{p.name}"
            if asset.points:
                parent = path.rsplit("/", 1)[0] if "/" in path else ""
                groups.setdefault(parent, []).append(asset.id)
        tree = "   ".join(f"{k}: {' '.join(v)}" if k else " ".join(v) for k, v in groups.items())
        return cls(labels, tree)


@dataclass
class SubscriberView:
    """What the demo's own subscriber has seen of the cloud's fan-out."""

    counts: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0

    def on_record(self, stream: str, payload: bytes) -> None:
        from gateway.core import records

        self.counts[stream] = self.counts.get(stream, 0) + 1
        rec = records.decode(payload)
        if stream == records.STREAM_TELEMETRY:
            self.samples += len(rec["id"])
        elif stream == records.STREAM_EVENTS:
            self.events.append(rec)
            del self.events[:-8]

    def summary(self) -> str:
        recs = "  ".join(f"{s} {n:,}" for s, n in sorted(self.counts.items()))
        return f"gaps {self.gaps}  samples {self.samples:,}  records: {recs or 'none yet'}"


def fit(line: str, width: int, ellipsis: str = "…") -> str:
    """``line`` cut to ``width`` columns, the cut marked, instead of wrapped by the terminal."""
    if len(line) <= width:
        return line
    return line[: max(0, width - len(ellipsis))] + ellipsis[:width]


def _rtt(ms: float | None) -> str:
    """A device's last round trip; /status has null (JSON has no NaN) before the first answer."""
    return "-" if ms is None else f"{ms:.1f}ms"


def _value(p: dict[str, Any]) -> str:
    v = p["value"]
    if v is None:
        return "-"
    if p["unit"] in ("parts", "{parts}", "") and float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}" if p["unit"] == "" else f"{v:.2f}"  # model scores live below 1


def activity_line(ev: dict[str, Any]) -> str | None:
    """One gateway event from ``/status`` ``recent`` as text (None: not shown)."""
    kind = ev.get("kind")
    if kind == "alarm":
        return f"alarm {ev.get('state', '?')} {ev.get('rule')}: {ev.get('message', '')}"
    if kind == "write":
        return (
            f"write {ev.get('point')} = {ev.get('value', 0):g} ({ev.get('outcome')}) "
            f"by {ev.get('rule')}"
        )
    if kind == "log":
        return f"log {ev.get('rule')}: {ev.get('message', '')}"
    if kind == "rule_event":
        return f"event {ev.get('rule')}: {ev.get('message', '')}"
    if kind == "device":
        return f"device {ev.get('device')} {ev.get('state')}"
    return None


def render_lines(
    status: dict[str, Any] | None,
    view: SubscriberView,
    coil: bool | None,
    started: float,
    width: int,
    height: int,
    ellipsis: str = "…",
    model: ModelLabels | None = None,
    page: str = "",
) -> list[tuple[str, str]]:
    """The screen as ``(text, sgr)`` lines, at most ``height`` of them, none wider than ``width``.

    The rule activity list gets the rows left over, newest last; the point table uses as many
    columns as the width allows, naming points by asset (``press1.temperature``) when the
    config has an ``assets:`` tree (``model``). ``page``: the operator page's line (address and
    login).
    """
    up = int(time.time() - started)
    head = [(f"Edge gateway demo   running {up // 60:02d}:{up % 60:02d}   Ctrl-C stops", BOLD)]
    if page:
        head.append((f"PAGE     {page}", BOLD))
    if status is None:
        rows = [*head, ("waiting for the gateway's status endpoint ...", "")]
        return [(fit(t, width, ellipsis), s) for t, s in rows][:height]
    devs = "  ".join(
        f"{n} {'online' if st.get('connected') else 'OFFLINE'} {_rtt(st.get('last_rtt_ms'))}"
        for n, st in status["devices"].items()
    )
    u = status["uplink"]
    depth = sum(int(st.get("depth", 0)) for st in u.get("streams", {}).values())
    top = [
        *head,
        (f"DEVICES  {devs}", ""),
        *([(f"ASSETS   {model.tree}", "")] if model and model.tree else []),
        (
            f"GATEWAY  {status['samples_per_second']:.0f} samples/s   total "
            f"{int(status['samples_total']):,}   link {u.get('link')}   queue {depth}   "
            f"committed {u.get('committed', 0):,}",
            "",
        ),
    ]
    cell = 39
    ncols = max(1, (width + 1) // (cell + 1))
    cells = []
    for p in status["points"]:
        quality = "" if p["quality"] == "good" else p["quality"]
        name = model.labels.get(p["name"], p["name"]) if model else p["name"]
        cells.append(f"{name:<21.21}{_value(p):>9} {p['unit']:<5.5}{quality:>3.3}")
    nrows = -(-len(cells) // ncols)
    table = []
    for r in range(nrows):
        row = [cells[i] for i in range(r, len(cells), nrows)]
        table.append((" ".join(f"{c:<{cell}}" for c in row).rstrip(), ""))
    alarms = [a for a in status.get("alarms", []) if a.get("active")]
    alarm_line = (
        "ALARMS   " + (", ".join(f"{a['rule']} [{a.get('severity')}]" for a in alarms) or "none"),
        RED if alarms else "",
    )
    coil_text = {True: "RUN", False: "STOP", None: "unreachable"}[coil]
    coil_line = (
        f"DEVICE   press1 run coil, read from the simulated device: {coil_text}",
        {True: GREEN, False: YELLOW, None: ""}[coil],
    )
    cloud_line = (f"CLOUD    to subscriber: {view.summary()}", "")
    fixed = [*top, *table, alarm_line, coil_line, cloud_line]
    room = height - len(fixed) - 1  # the "RULE ACTIVITY" title
    recent = [
        (f"  {_fmt_ts(ev.get('ts'))} {text}", RED if ev.get("state") == "raised" else "")
        for ev in status.get("recent", [])
        if ev.get("kind") in ("alarm", "write", "log", "rule_event") and (text := activity_line(ev))
    ]
    activity: list[tuple[str, str]] = []
    if room > 0:
        activity = [("RULE ACTIVITY (newest last)", BOLD)]
        activity += recent[-room:]
    lines = [*top, *table, alarm_line, *activity, coil_line, cloud_line]
    return [(fit(t, width, ellipsis), s) for t, s in lines][:height]


def frame(lines: list[tuple[str, str]], color: bool) -> str:
    """A full-screen frame: home, each line cleared to its end, the rest of the screen cleared.

    No newline after the last line, so a frame of exactly the terminal's height does not scroll.
    """
    out = []
    for text, sgr in lines:
        out.append(f"\x1b[{sgr}m{text}\x1b[0m" if color and sgr else text)
    return "\x1b[H" + "\x1b[K\n".join(out) + "\x1b[K\x1b[J"


@dataclass
class PlainLog:
    """Turns successive ``/status`` snapshots into one line per change (``--plain``)."""

    seen: set[tuple[Any, ...]] = field(default_factory=set)
    connected: dict[str, bool] = field(default_factory=dict)
    link: str | None = None
    coil: bool | None = None
    last_summary: float = 0.0

    def lines(
        self,
        status: dict[str, Any] | None,
        view: SubscriberView,
        coil: bool | None,
        now: float,
    ) -> list[str]:
        if status is None:
            return []
        out: list[str] = []
        stamp = _fmt_ts(now)
        for name, st in status["devices"].items():
            up = bool(st.get("connected"))
            if self.connected.get(name, False) != up:  # not "OFFLINE" while it first connects
                out.append(f"{stamp} device {name} {'online' if up else 'OFFLINE'}")
                self.connected[name] = up
        link = status["uplink"].get("link")
        if link != self.link:
            out.append(f"{stamp} uplink link {link}")
            self.link = link
        current = set()
        for ev in status.get("recent", []):
            key = (ev.get("kind"), ev.get("ts"), ev.get("rule"), ev.get("device"), ev.get("state"))
            current.add(key)
            if ev.get("kind") == "device" or key in self.seen:
                continue  # device changes come from the connection flags above
            text = activity_line(ev)
            if text is not None:
                out.append(f"{_fmt_ts(ev.get('ts'))} {text}")
        self.seen = current  # the status keeps a bounded list: so does this
        if coil is not None and coil != self.coil:
            out.append(f"{stamp} device press1 run coil {'RUN' if coil else 'STOP'}")
            self.coil = coil
        if now - self.last_summary >= SUMMARY_EVERY:
            self.last_summary = now
            out.append(f"{stamp} summary {summary_line(status, view)}")
        return out


def summary_line(status: dict[str, Any], view: SubscriberView) -> str:
    u = status["uplink"]
    online = sum(1 for st in status["devices"].values() if st.get("connected"))
    active = sum(1 for a in status.get("alarms", []) if a.get("active"))
    return (
        f"{status['samples_per_second']:.0f} samples/s, {online}/{len(status['devices'])} devices "
        f"online, {active} alarms active, link {u.get('link')}, committed "
        f"{u.get('committed', 0):,}; cloud -> subscriber {view.summary()}"
    )
