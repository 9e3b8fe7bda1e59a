"""Compile expression trees to Python closures over a flat list of point values.

Values are ``float`` (booleans are ``True``/``False``, usable as 1/0), or ``None`` for *unknown*:
a point that was never seen, whose last sample had a quality other than GOOD, or whose value was
NaN. Unknown propagates like SQL NULL (three-valued Kleene logic): any arithmetic, comparison or
function of an unknown is unknown; ``false and unknown`` is false, ``true or unknown`` is true, so
one offline sensor in an ``or`` does not mask an alarm on the other.

Arithmetic never raises: division or modulo by zero gives NaN, overflow gives inf, and every
comparison with NaN is false (IEEE). In a boolean position a number is true when it is non-zero
and not NaN.

Closures are specialised for the common shapes (``point OP constant``, constant folding) so that a
condition like ``a.b > 80 and c.d < 3`` is three Python calls, well under a microsecond.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from gateway.rules import functions as fn_
from gateway.rules.errors import RuleError
from gateway.rules.expr import parse
from gateway.rules.nodes import (
    STATEFUL_FUNCTIONS,
    BinOp,
    BoolOp,
    Call,
    Compare,
    Const,
    Neg,
    Node,
    Not,
    PointRef,
    children,
    point_ids,
)

if TYPE_CHECKING:
    from gateway.core.points import PointTable

Value = float | bool | None
Thunk = Callable[[], Value]
Updater = Callable[[], None]

#: Calls whose result depends on more than their arguments' current values (never folded).
_DYNAMIC = STATEFUL_FUNCTIONS | {"stale", "latest", "lag", "percentile"} | fn_.WINDOW_FUNCTIONS
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


_NAN = math.nan
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _div(a: float, b: float) -> float:
    return a / b if b else _NAN


def _mod(a: float, b: float) -> float:
    return a % b if b else _NAN


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _div,
    "%": _mod,
}


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


def _dynamic(node: Node) -> bool:
    if isinstance(node, PointRef) or (isinstance(node, Call) and node.name in _DYNAMIC):
        return True
    return any(_dynamic(c) for c in children(node))


class _Builder:
    """Turns a tree into closures over an :class:`EvalContext`.

    Subtrees that read nothing are folded to constants. Stateful calls (``changed``, ``rising``,
    ``between`` ...) keep their state in a cell updated by an *updater* appended to
    ``updaters`` (children before parents); the engine runs every updater of a rule once per
    evaluation before evaluating, so state never depends on and/or short-circuits.
    """

    def __init__(self, ctx: EvalContext, updaters: list[Updater], fold: bool = True) -> None:
        self.ctx = ctx
        self.vals = ctx.values
        self.updaters = updaters
        self.fold = fold

    def const(self, node: Node) -> tuple[bool, Value]:
        """``(True, value)`` when the subtree reads no point (evaluated once, at compile time)."""
        if isinstance(node, Const):
            return True, node.value
        if not self.fold or _dynamic(node):
            return False, None
        return True, _Builder(EvalContext([]), [], fold=False).thunk(node)()

    def thunk(self, node: Node) -> Thunk:
        if self.fold and not isinstance(node, Const | PointRef):
            is_const, value = self.const(node)
            if is_const:
                return lambda: value
        if isinstance(node, Const):
            c = node.value
            return lambda: c
        if isinstance(node, PointRef):
            vals, i = self.vals, node.pid
            return lambda: vals[i]
        if isinstance(node, Neg):
            f = self.thunk(node.operand)

            def neg() -> Value:
                x = f()
                return None if x is None else -x

            return neg
        if isinstance(node, Not):
            g = self.boolean(node.operand)

            def not_() -> Value:
                x = g()
                return None if x is None else not x

            return not_
        if isinstance(node, Compare):
            return self.binary(_COMPARE[node.op], node.left, node.right)
        if isinstance(node, BinOp):
            return self.binary(_ARITH[node.op], node.left, node.right)
        if isinstance(node, BoolOp):
            return self.boolop(node)
        if isinstance(node, Call):
            return self.call(node)
        raise AssertionError(f"unhandled node {type(node).__name__}")

    def boolean(self, node: Node) -> Callable[[], bool | None]:
        """A thunk yielding strictly ``True``/``False``/``None`` for a boolean position."""
        f = self.thunk(node)
        if node.is_bool:
            return f  # type: ignore[return-value]
        return lambda: _truth(f())

    def binary(self, fn: Callable[[float, float], Value], left: Node, right: Node) -> Thunk:
        vals = self.vals
        lc, lv = self.const(left)
        rc, rv = self.const(right)
        if isinstance(left, PointRef) and rc:
            i, c = left.pid, rv
            if c is None:
                return lambda: None

            def point_const() -> Value:
                x = vals[i]
                return None if x is None else fn(x, c)  # type: ignore[arg-type]

            return point_const
        if lc and isinstance(right, PointRef):
            i, c = right.pid, lv
            if c is None:
                return lambda: None

            def const_point() -> Value:
                x = vals[i]
                return None if x is None else fn(c, x)  # type: ignore[arg-type]

            return const_point
        f = self.thunk(left)
        g = self.thunk(right)

        def general() -> Value:
            a = f()
            if a is None:
                return None
            b = g()
            if b is None:
                return None
            return fn(a, b)

        return general

    def boolop(self, node: BoolOp) -> Thunk:
        f = self.boolean(node.left)
        g = self.boolean(node.right)
        if node.op == "and":

            def and_() -> Value:
                a = f()
                if a is False:
                    return False
                b = g()
                if b is False:
                    return False
                return None if a is None or b is None else True

            return and_

        def or_() -> Value:
            a = f()
            if a is True:
                return True
            b = g()
            if b is True:
                return True
            return None if a is None or b is None else False

        return or_

    # -- calls -----------------------------------------------------------------------------
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


class CompiledExpr:
    """A parsed, checked expression, ready to be bound to a value list.

    Attributes
    ----------
    text : str
        The source text.
    source : str
        Where it came from (``"file:line"`` or a label), for error messages.
    points : tuple[int, ...]
        Sorted ids of the points it reads; the engine re-evaluates a rule when one of them changes.
    point_names : tuple[str, ...]
        Their full names, in the same order.
    """

    __slots__ = ("text", "source", "points", "point_names", "triggers", "_tree")

    def __init__(self, text: str, source: str, tree: Node, names: Sequence[str]) -> None:
        self.text = text
        self.source = source
        self._tree = tree
        self.points = tuple(sorted(point_ids(tree)))
        self.point_names = tuple(names[i] for i in self.points)
        self.triggers = tuple(sorted(_triggers(tree)))

    @property
    def tree(self) -> Node:
        return self._tree

    def windows(self) -> list[tuple[int, str, float]]:
        """``(point id, "s" | "samples", amount)`` of every window it reads (ring sizing)."""
        return list(_windows(self._tree))

    @property
    def time_dependent(self) -> bool:
        """Uses ``stale()``: its value changes with time alone, so ticks must re-evaluate it."""
        return _uses(self._tree, "stale")

    @property
    def stateful(self) -> bool:
        return any(_uses(self._tree, name) for name in STATEFUL_FUNCTIONS)

    def __repr__(self) -> str:
        return f"CompiledExpr({self.text!r})"

    @property
    def is_boolean(self) -> bool:
        """True when the expression is a condition (comparison, and/or/not, true/false)."""
        return self._tree.is_bool

    def bind(self, ctx: EvalContext | list[Value], updaters: list[Updater] | None = None) -> Thunk:
        """A zero-argument closure evaluating the expression over ``ctx`` (or a value list).

        Values are read at every call, never copied: update them in place. Stateful calls append
        their updaters to ``updaters``; the caller runs them before each evaluation. Without a
        list, the closure runs its own updaters itself.
        """
        return self._bind(ctx, updaters, False)  # type: ignore[return-value]

    def bind_condition(
        self, ctx: EvalContext | list[Value], updaters: list[Updater] | None = None
    ) -> Callable[[], bool | None]:
        """Like :meth:`bind`, but the result is ``True``, ``False`` or ``None`` (unknown)."""
        return self._bind(ctx, updaters, True)  # type: ignore[return-value]

    def _bind(
        self, ctx: EvalContext | list[Value], updaters: list[Updater] | None, cond: bool
    ) -> Callable[[], Value]:
        if not isinstance(ctx, EvalContext):
            ctx = EvalContext(ctx)
        own: list[Updater] = [] if updaters is None else updaters
        b = _Builder(ctx, own)
        f = b.boolean(self._tree) if cond else b.thunk(self._tree)
        if updaters is not None or not own:
            return f

        def with_state() -> Value:
            for u in own:
                u()
            return f()

        return with_state

    def evaluate(self, values: Sequence[Value]) -> Value:
        """One-off evaluation (tools, tests); the engine binds once and calls the closure."""
        return self.bind(list(values))()


def _triggers(node: Node) -> set[int]:
    """Points whose samples re-evaluate the expression: all but those read only via latest()."""
    if isinstance(node, PointRef):
        return {node.pid}
    if isinstance(node, Call) and node.name == "latest":
        return set()
    out: set[int] = set()
    for child in children(node):
        out |= _triggers(child)
    return out


def _windows(node: Node) -> Iterator[tuple[int, str, float]]:
    if isinstance(node, Call) and node.args and isinstance(node.args[0], PointRef):
        pid = node.args[0].pid
        spec = node.args[-1]
        if fn_.is_window_call(node) or node.name == "percentile":
            if isinstance(spec, Const):
                yield pid, spec.unit, float(spec.value)
            else:
                yield pid, "samples", float(fn_.STATE_WINDOW_SAMPLES)
        elif node.name == "lag":
            yield pid, "samples", float(spec.value) + 1.0  # type: ignore[attr-defined]
        elif node.name == "changed":
            yield pid, "samples", 2.0
    for child in children(node):
        yield from _windows(child)


def _uses(node: Node, name: str) -> bool:
    if isinstance(node, Call) and node.name == name:
        return True
    return any(_uses(c, name) for c in children(node))


def _check(node: Node, text: str, source: str) -> None:
    def fail(msg: str, col: int) -> RuleError:
        return RuleError(msg, source, col, text)

    if isinstance(node, Call):
        fn_.check_call(node, fail)
        if fn_.is_window_call(node) or node.name == "percentile":
            spec = node.args[-1]
            if isinstance(spec, Call):  # between(): a window, checked here, not as a value
                for child in (*node.args[:-1], *spec.args):
                    _check(child, text, source)
                return
    for child in children(node):
        _check(child, text, source)


def compile_expression(
    src: str, points: PointTable | Sequence[str], source: str = "<expr>"
) -> CompiledExpr:
    """Parse and check ``src`` against ``points`` (a :class:`~gateway.core.points.PointTable`).

    Parameters
    ----------
    src : str
        Expression text, e.g. ``"press1.temp > 80 and pump1.flow < 3"``.
    points : PointTable or sequence of point names
        Names resolve to point ids; a plain sequence of names (index = id) also works.
    source : str
        ``"file:line"`` of the rule, used in :class:`RuleError` locations.

    Raises
    ------
    RuleError
        Syntax error, unknown point or unknown function, with ``file:line:column``.
    """
    if not isinstance(src, str):
        raise RuleError(f"expected an expression string, got {type(src).__name__}", source)
    names: Sequence[str]
    if isinstance(points, Sequence):
        names = points
    else:
        names = [p.name for p in points.infos]
    tree = parse(src, names, source)
    _check(tree, src, source)
    return CompiledExpr(src, source, tree, names)
