"""Message templates: ``"overheating: {press1.temp:.1f} degC"``.

A field is ``{device.point}`` or ``{device.point:spec}``, or a function call of the rule language
such as ``{avg(press1.temp, 10s):.1f}`` or ``{round(rms(m.v, 1s), 2)}``, with a numeric format spec (the float part
of Python's format mini-language: fill/align, sign, width, grouping, precision, one of
``eEfFgGn%``). ``{{`` and ``}}`` are literal braces. Everything is checked at compile time; there is
no attribute access, indexing or conversion (``!r``), so a template cannot run Python.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gateway.rules.errors import RuleError

if TYPE_CHECKING:
    from gateway.rules.compiler import CompiledExpr, EvalContext, Updater

Value = float | bool | None

_SPEC = re.compile(
    r"(?:.?[<>=^])?[+\- ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<prec>\d+))?[eEfFgGn%]?\Z"
)
_POINT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_WIDTH = 64
_MAX_PRECISION = 30
#: How an unknown value (never seen, bad quality, NaN) is rendered.
UNKNOWN_TEXT = "n/a"


def _valid_spec(spec: str) -> bool:
    m = _SPEC.match(spec)
    if m is None:
        return False
    width, prec = m.group("width"), m.group("prec")
    if (width and int(width) > _MAX_WIDTH) or (prec and int(prec) > _MAX_PRECISION):
        return False
    try:
        format(1.5, spec)
    except ValueError:
        return False
    return True


def format_value(value: Value, spec: str = "") -> str:
    """Render one value: unknown as ``n/a``; without a spec, integral floats print without ``.0``."""
    if value is None:
        return UNKNOWN_TEXT
    x = float(value)
    if spec:
        return format(x, spec)
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


class MessageTemplate:
    """A parsed template: literal text interleaved with ``(point id, spec)`` fields.

    Parameters
    ----------
    text : str
        The template source.
    names : sequence of str
        Point names, index = point id.
    source : str
        ``"file:line"`` for :class:`RuleError`.
    """

    __slots__ = ("text", "points", "_parts")

    def __init__(self, text: str, names: Sequence[str], source: str = "<template>") -> None:
        self.text = text
        ids = {n: i for i, n in enumerate(names)}
        parts: list[str | tuple[int | CompiledExpr, str]] = []
        literal: list[str] = []
        i = 0
        n = len(text)

        def fail(msg: str, col: int) -> RuleError:
            return RuleError(f"{msg} at column {col} of the message template", source, col, text)

        while i < n:
            ch = text[i]
            if ch == "}":
                if text.startswith("}}", i):
                    literal.append("}")
                    i += 2
                    continue
                raise fail("single '}' (write '}}' for a literal brace)", i + 1)
            if ch != "{":
                literal.append(ch)
                i += 1
                continue
            if text.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = text.find("}", i + 1)
            if end < 0:
                raise fail("expected '}' to close the field opened", i + 1)
            field = text[i + 1 : end]
            name, _, spec = field.partition(":")
            col = i + 2
            if "{" in field:
                raise fail("nested '{' in a field", col)
            expr: CompiledExpr | None = None
            if "(" in name:
                from gateway.rules.compiler import compile_expression

                try:
                    expr = compile_expression(name, names, source)
                except RuleError as err:
                    raise fail(f"in {{{name}}}: {err.message}", col) from None
            elif not _POINT.match(name.strip()):
                raise fail(
                    f"expected a point name 'device.point' or a function call in {{{field}}}", col
                )
            name = name.strip()
            pid = ids.get(name)
            if pid is None and expr is None:
                close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise fail(f"unknown point {name!r}{hint}", col)
            if not _valid_spec(spec):
                raise fail(
                    f"invalid format spec {spec!r} (expected a numeric spec like '.1f', "
                    f"width <= {_MAX_WIDTH}, precision <= {_MAX_PRECISION})",
                    col + len(name) + 1,
                )
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append((expr if expr is not None else pid, spec))  # type: ignore[arg-type]
            i = end + 1
        if literal:
            parts.append("".join(literal))
        self._parts = tuple(parts)
        ids_read: set[int] = set()
        for p in parts:
            if isinstance(p, tuple):
                ids_read |= {p[0]} if isinstance(p[0], int) else set(p[0].points)
        self.points = tuple(sorted(ids_read))

    def render(self, values: Sequence[Value]) -> str:
        """The message with every field replaced by the current value of its point."""
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part[0], int):
                out.append(format_value(values[part[0]], part[1]))
            else:
                out.append(format_value(part[0].evaluate(values), part[1]))
        return "".join(out)

    def bind(self, ctx: EvalContext, updaters: list[Updater]) -> Callable[[], str]:
        """A closure rendering the message from ``ctx`` (function fields share the rule's state)."""
        values = ctx.values
        fields: list[str | tuple[Callable[[], Value], str]] = []
        for part in self._parts:
            if isinstance(part, str):
                fields.append(part)
            elif isinstance(part[0], int):
                pid = part[0]
                fields.append((lambda pid=pid: values[pid], part[1]))  # type: ignore[misc]
            else:
                fields.append((part[0].bind(ctx, updaters), part[1]))

        def render() -> str:
            return "".join(f if isinstance(f, str) else format_value(f[0](), f[1]) for f in fields)

        return render
