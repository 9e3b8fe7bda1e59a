"""Expression tree of the rule language (built by :mod:`gateway.rules.expr`)."""

from __future__ import annotations

#: Window functions: ``f(point, window)``; the window is a duration (``10s``), a sample count
#: (``100 samples``) or a state window ``between(start, end)``.
WINDOW_FUNCTIONS: frozenset[str] = frozenset(
    {
        "avg", "min", "max", "sum", "count", "std", "rms", "peak", "p2p", "crest", "kurtosis",
        "skew", "median", "delta", "rate", "integral", "increase", "first", "last",
    }
)  # fmt: skip
#: Functions that keep state between evaluations of their rule (updated once per evaluation).
STATEFUL_FUNCTIONS: frozenset[str] = frozenset(
    {"changed", "deadband", "rising", "falling", "counter", "between"}
)
#: Built-in functions: name -> (min args, max args).
FUNCTIONS: dict[str, tuple[int, int]] = {
    "abs": (1, 1),
    "min": (1, 1 << 16),
    "max": (1, 1 << 16),
    "if": (3, 3),
    "clamp": (3, 3),
    "round": (1, 2),
    **{name: (2, 2) for name in WINDOW_FUNCTIONS if name not in ("min", "max")},
    "percentile": (3, 3),
    "lag": (2, 2),
    "latest": (1, 1),
    "stale": (2, 2),
    "changed": (1, 1),
    "deadband": (2, 2),
    "rising": (1, 1),
    "falling": (1, 1),
    "counter": (1, 2),
    "between": (2, 2),
}
#: Functions whose result is a condition (true/false/unknown).
BOOL_FUNCTIONS: frozenset[str] = frozenset({"stale", "changed", "rising", "falling"})


class Node:
    """Base of all nodes: ``col`` is the 1-based column, ``depth`` the height of the subtree."""

    __slots__ = ("col", "depth")
    col: int
    depth: int

    def __init__(self, col: int, *children: Node) -> None:
        self.col = col
        self.depth = 1 + max((c.depth for c in children), default=0)

    @property
    def is_bool(self) -> bool:
        """True when the node always yields a boolean (or unknown), never a number."""
        return False


class Const(Node):
    """A literal. ``unit`` is ``"s"`` for a duration (value in seconds), ``"samples"`` for a
    sample count, ``""`` for a plain number or boolean."""

    __slots__ = ("value", "unit")

    def __init__(self, col: int, value: float | bool, unit: str = "") -> None:
        super().__init__(col)
        self.value = value
        self.unit = unit

    @property
    def is_bool(self) -> bool:
        return isinstance(self.value, bool)


class PointRef(Node):
    __slots__ = ("pid", "name")

    def __init__(self, col: int, pid: int, name: str) -> None:
        super().__init__(col)
        self.pid = pid
        self.name = name


class Neg(Node):
    __slots__ = ("operand",)

    def __init__(self, col: int, operand: Node) -> None:
        super().__init__(col, operand)
        self.operand = operand


class Not(Node):
    __slots__ = ("operand",)

    def __init__(self, col: int, operand: Node) -> None:
        super().__init__(col, operand)
        self.operand = operand

    @property
    def is_bool(self) -> bool:
        return True


class BinOp(Node):
    """Arithmetic: ``+ - * / %``."""

    __slots__ = ("op", "left", "right")

    def __init__(self, col: int, op: str, left: Node, right: Node) -> None:
        super().__init__(col, left, right)
        self.op = op
        self.left = left
        self.right = right


class Compare(Node):
    __slots__ = ("op", "left", "right")

    def __init__(self, col: int, op: str, left: Node, right: Node) -> None:
        super().__init__(col, left, right)
        self.op = op
        self.left = left
        self.right = right

    @property
    def is_bool(self) -> bool:
        return True


class BoolOp(Node):
    """``and`` / ``or`` with three-valued (Kleene) logic."""

    __slots__ = ("op", "left", "right")

    def __init__(self, col: int, op: str, left: Node, right: Node) -> None:
        super().__init__(col, left, right)
        self.op = op
        self.left = left
        self.right = right

    @property
    def is_bool(self) -> bool:
        return True


class Call(Node):
    __slots__ = ("name", "args")

    def __init__(self, col: int, name: str, args: tuple[Node, ...]) -> None:
        super().__init__(col, *args)
        self.name = name
        self.args = args

    @property
    def is_bool(self) -> bool:
        if self.name == "if":
            return self.args[1].is_bool and self.args[2].is_bool
        return self.name in BOOL_FUNCTIONS


def point_ids(node: Node) -> set[int]:
    """Ids of every point the expression reads."""
    if isinstance(node, PointRef):
        return {node.pid}
    out: set[int] = set()
    for child in children(node):
        out |= point_ids(child)
    return out


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Neg | Not):
        return (node.operand,)
    if isinstance(node, BinOp | Compare | BoolOp):
        return (node.left, node.right)
    if isinstance(node, Call):
        return node.args
    return ()


def to_text(node: Node) -> str:
    """Source-like text of a tree (labels in plots; not guaranteed to round-trip spacing)."""
    if isinstance(node, Const):
        if isinstance(node.value, bool):
            return "true" if node.value else "false"
        if node.unit == "s":
            return f"{node.value:g}s"
        if node.unit == "samples":
            return f"{node.value:g} samples"
        return f"{node.value:g}"
    if isinstance(node, PointRef):
        return node.name
    if isinstance(node, Neg):
        return f"-{to_text(node.operand)}"
    if isinstance(node, Not):
        return f"not {to_text(node.operand)}"
    if isinstance(node, BinOp | Compare | BoolOp):
        return f"({to_text(node.left)} {node.op} {to_text(node.right)})"
    if isinstance(node, Call):
        return f"{node.name}({', '.join(to_text(a) for a in node.args)})"
    return "?"
