"""Expression tree of the rule language (built by :mod:`gateway.rules.expr`)."""

from __future__ import annotations

#: Built-in functions: name -> (min args, max args).
FUNCTIONS: dict[str, tuple[int, int]] = {"abs": (1, 1), "min": (1, 1 << 16), "max": (1, 1 << 16)}


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
    __slots__ = ("value",)

    def __init__(self, col: int, value: float | bool) -> None:
        super().__init__(col)
        self.value = value

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
