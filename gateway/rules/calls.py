"""Compiling the built-in functions: windows over ring buffers, stateful operators, if/clamp/round.

Split from :mod:`gateway.rules.compiler` (which compiles operators and wires everything together);
the semantics of each function are documented in :mod:`gateway.rules.functions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from gateway.rules import functions as fn_
from gateway.rules.nodes import STATEFUL_FUNCTIONS, Call, Const, Node

Value = float | bool | None
Thunk = Callable[[], Value]
Updater = Callable[[], None]

_NAN = math.nan
_UNSET = object()


class EvalContext:
    """Everything a compiled expression reads, shared by all rules of one engine.

    Attributes
    ----------
    values : list
        Current value per point id: float/bool, or None when unknown (never seen, last sample
        not GOOD, or NaN).
    rings : list of RingBuffer
        The point table's rings (the same list object, so points added later are visible).
    latest : list
        Last *good* value per point (``latest()``); survives bad samples.
    last_good_ts : list of float
        Time of the last good sample per point (NaN: never), for ``stale()``.
    now : float
        Timestamp of the evaluation in progress (the sample's ``ts``, or ``tick(now)``).
    start : float
        Time of the first evaluation; ``stale()`` counts from it for points never seen.
    """

    __slots__ = ("values", "rings", "latest", "last_good_ts", "now", "start")

    def __init__(self, values: list[Value], rings: list[Any] | None = None) -> None:
        self.values = values
        self.rings: list[Any] = rings if rings is not None else []
        self.latest: list[Value] = list(values)
        self.last_good_ts: list[float] = [_NAN] * len(values)
        self.now = _NAN
        self.start = _NAN

    def grow(self, n: int) -> None:
        """Make room for ``n`` points (points registered after the context was made)."""
        missing = n - len(self.values)
        if missing > 0:
            self.values.extend([None] * missing)
            self.latest.extend([None] * missing)
            self.last_good_ts.extend([_NAN] * missing)


def _min(xs: Sequence[float]) -> float:
    r = xs[0]
    for x in xs:
        if x != x:
            return _NAN
        if x < r:
            r = x
    return r


def _max(xs: Sequence[float]) -> float:
    r = xs[0]
    for x in xs:
        if x != x:
            return _NAN
        if x > r:
            r = x
    return r


def _truth(x: Value) -> bool | None:
    return None if x is None else (x == x and x != 0)


def _round(x: float, digits: int) -> float:
    """Half away from zero (what a person means by rounding), not Python's banker's rounding."""
    if not math.isfinite(x):
        return x
    m = 10.0**digits
    return math.copysign(math.floor(abs(x) * m + 0.5) / m, x)


class CallBuilder:
    """The function-call half of the expression builder (mixed into ``compiler._Builder``)."""

    ctx: EvalContext
    updaters: list[Updater]

    def thunk(self, node: Node) -> Thunk:
        raise NotImplementedError

    def boolean(self, node: Node) -> Callable[[], bool | None]:
        raise NotImplementedError

    def call(self, node: Call) -> Thunk:
        name = node.name
        if fn_.is_window_call(node):
            return self.window(node, fn_.REDUCERS[name], node.args[-1])
        if name == "percentile":
            return self.window(node, fn_.percentile(float(node.args[1].value)), node.args[2])  # type: ignore[attr-defined]
        if name in STATEFUL_FUNCTIONS:
            return self.stateful(node)
        ctx = self.ctx
        if name in ("latest", "stale", "lag"):
            pid = node.args[0].pid  # type: ignore[attr-defined]
            if name == "latest":
                latest = ctx.latest
                return lambda: latest[pid]
            if name == "lag":
                n = int(node.args[1].value)  # type: ignore[attr-defined]
                return lambda: self._lag(pid, n)
            limit = float(node.args[1].value)  # type: ignore[attr-defined]
            last = ctx.last_good_ts

            def stale() -> Value:
                t = last[pid]
                if t != t:
                    t = ctx.start
                    if t != t:
                        return None
                return ctx.now - t >= limit

            return stale
        if name == "if":
            c = self.boolean(node.args[0])
            a = self.thunk(node.args[1])
            b = self.thunk(node.args[2])

            def if_() -> Value:
                k = c()
                return None if k is None else (a() if k else b())

            return if_
        fs = [self.thunk(a) for a in node.args]
        if name == "abs":
            f = fs[0]

            def abs_() -> Value:
                x = f()
                return None if x is None else abs(x)

            return abs_
        if name == "round":
            f = fs[0]
            digits = int(node.args[1].value) if len(fs) == 2 else 0  # type: ignore[attr-defined]

            def round_() -> Value:
                x = f()
                return None if x is None else _round(float(x), digits)

            return round_
        if name == "clamp":
            fx, flo, fhi = fs

            def clamp() -> Value:
                x, lo, hi = fx(), flo(), fhi()
                if x is None or lo is None or hi is None:
                    return None
                return _min([_max([x, lo]), hi])  # type: ignore[list-item]

            return clamp
        agg = _min if name == "min" else _max

        def aggregate() -> Value:
            xs = [f() for f in fs]
            return None if None in xs else agg(xs)  # type: ignore[arg-type]

        return aggregate

    def _lag(self, pid: int, n: int) -> Value:
        ts, v = self._last_n(pid, n + 1)
        return float(v[0]) if v.shape[0] == n + 1 else None

    def _last_n(self, pid: int, n: int) -> tuple[Any, Any]:
        ring = self.ctx.rings[pid]
        now = self.ctx.now
        ts, v = ring.last(n)
        if ts.shape[0] and ts[-1] > now:
            all_ts, all_v = ring.last(len(ring))
            ts, v = fn_.cut(all_ts, all_v, now)
            ts, v = ts[-n:], v[-n:]
        return ts, v

    def window(self, node: Call, reduce: fn_.Reducer, spec: Node) -> Thunk:
        ctx = self.ctx
        pid = node.args[0].pid  # type: ignore[attr-defined]
        cut = fn_.cut
        if isinstance(spec, Const) and spec.unit == "s":
            span = float(spec.value)

            def time_window() -> Value:
                now = ctx.now
                ts, v = ctx.rings[pid].since(now - span)
                return reduce(*cut(ts, v, now))

            return time_window
        if isinstance(spec, Const):
            n = int(spec.value)
            return lambda: reduce(*self._last_n(pid, n))
        assert isinstance(spec, Call)
        state = self.between(spec)

        def state_window() -> Value:
            t_open = state[0]
            if t_open is None:
                return None
            hi = ctx.now if state[1] is None else state[1]
            ts, v = ctx.rings[pid].since(math.nextafter(t_open, -math.inf))
            return reduce(*cut(ts, v, hi))

        return state_window

    def between(self, node: Call) -> list[float | None]:
        """State of a ``between(start, end)`` window: ``[t_open, t_close]`` (None: not yet)."""
        start = self.boolean(node.args[0])
        end = self.boolean(node.args[1])
        ctx = self.ctx
        state: list[float | None] = [None, None]

        def update() -> None:
            if state[0] is not None and state[1] is None:  # open
                if end() is True:
                    state[1] = ctx.now
            elif start() is True:
                state[0], state[1] = ctx.now, None

        self.updaters.append(update)
        return state

    def stateful(self, node: Call) -> Thunk:
        name = node.name
        cell: list[Value] = [False if name != "deadband" else None]
        if name == "counter":
            cell[0] = 0.0
        if name in ("rising", "falling", "counter"):
            g = self.boolean(node.args[0])
            reset = self.boolean(node.args[1]) if len(node.args) == 2 else None
            prev: list[bool | None] = [None]
            want = name != "falling"

            def edge() -> None:
                c = g()
                if c is None:
                    hit = False
                else:
                    hit = prev[0] is (not want) and c is want
                    prev[0] = c
                if name == "counter":
                    if reset is not None and reset() is True:
                        cell[0] = 0.0
                    elif hit:
                        cell[0] = cell[0] + 1.0  # type: ignore[operator]
                else:
                    cell[0] = hit

            self.updaters.append(edge)
        elif name == "changed":
            f = self.thunk(node.args[0])
            last: list[Any] = [_UNSET]

            def changed() -> None:
                x = f()
                if x is None:
                    cell[0] = None
                    return
                cell[0] = last[0] is not _UNSET and x != last[0]
                last[0] = x

            self.updaters.append(changed)
        elif name == "deadband":
            f = self.thunk(node.args[0])
            band = float(node.args[1].value)  # type: ignore[attr-defined]
            ref: list[Any] = [None]

            def deadband() -> None:
                x = f()
                if x is None:
                    cell[0] = None
                    return
                if ref[0] is None or not abs(x - ref[0]) <= band:
                    ref[0] = x
                cell[0] = ref[0]

            self.updaters.append(deadband)
        return lambda: cell[0]
