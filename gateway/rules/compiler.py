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
from typing import TYPE_CHECKING

from gateway.rules import functions as fn_
from gateway.rules.calls import CallBuilder, EvalContext, Thunk, Updater, Value, _truth
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


#: Calls whose result depends on more than their arguments' current values (never folded).
_DYNAMIC = STATEFUL_FUNCTIONS | {"stale", "latest", "lag", "percentile"} | fn_.WINDOW_FUNCTIONS


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


def _dynamic(node: Node) -> bool:
    if isinstance(node, PointRef) or (isinstance(node, Call) and node.name in _DYNAMIC):
        return True
    return any(_dynamic(c) for c in children(node))


class _Builder(CallBuilder):
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
        names = points.names()
    tree = parse(src, names, source)
    _check(tree, src, source)
    return CompiledExpr(src, source, tree, names)
