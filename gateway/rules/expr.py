"""The rule expression language: tokenizer and recursive-descent parser.

Grammar, loosest binding first::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?     # no chains: a < b < c
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | primary
    primary := NUMBER | DURATION | COUNT | "true" | "false" | POINT
             | FUNC "(" expr ("," expr)* ")" | "(" expr ")"

``DURATION`` is a number with a unit attached, ``500ms``, ``10s``, ``5m``, ``1h`` (seconds in the
tree); ``COUNT`` is an integer followed by ``samples`` (``100 samples``), used as a count window.

``POINT`` is ``device.point`` (two names joined by one dot), resolved against the point table at
parse time. The parser builds a small tree of :mod:`gateway.rules.nodes`; :mod:`gateway.rules.compiler`
turns it into closures. Nothing here ever hands text to Python's ``eval``/``exec``/``compile``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import NamedTuple

from gateway.rules.errors import RuleError
from gateway.rules.nodes import (
    FUNCTIONS,
    BinOp,
    BoolOp,
    Call,
    Compare,
    Const,
    Neg,
    Node,
    Not,
    PointRef,
)

#: Deepest allowed expression tree: keeps parsing and evaluation far from Python's recursion limit.
MAX_DEPTH = 64
#: Longest accepted expression source, in characters.
MAX_LENGTH = 4096

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(
    rf"""
    (?P<ws>[ \t]+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<path>{_NAME}(?:/{_NAME})+\.{_NAME})
  | (?P<name>{_NAME}(?:\.(?:{_NAME})?)*)
  | (?P<op>==|!=|<=|>=|[<>+\-*/%(),])
    """,
    re.VERBOSE | re.ASCII,
)
_KEYWORDS = frozenset({"and", "or", "not", "true", "false"})
# `model("bearing_ae").score` is the DESIGN's spelling of the model output point bearing_ae.score.
_MODEL_REF = re.compile(
    r"""model\(\s*(["'])([A-Za-z_][A-Za-z0-9_]*)\1\s*\)\.([A-Za-z_][A-Za-z0-9_]*)""", re.ASCII
)
_UNIT = re.compile(r"(ms|s|m|h)(?![A-Za-z0-9_.])", re.ASCII)
_SAMPLES = re.compile(r"[ \t]*samples?(?![A-Za-z0-9_.])", re.ASCII)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HINTS = {
    "=": "use '==' to compare",
    "!": "use 'not' or '!='",
    "&": "use 'and'",
    "|": "use 'or'",
    "'": "strings are not part of the rule language",
    '"': "strings are not part of the rule language",
    "[": "indexing is not part of the rule language",
    "^": "there is no power operator",
}


class Token(NamedTuple):
    kind: str  # "num" | "dur" | "count" | "name" | "point" | "kw" | "op" | "end"
    text: str
    col: int  # 1-based column of the first character
    value: float = 0.0  # seconds of a "dur", samples of a "count"


def _describe(tok: Token) -> str:
    return "end of expression" if tok.kind == "end" else f"'{tok.text}'"


def tokenize(text: str, source: str = "<expr>") -> list[Token]:
    """Split ``text`` into tokens, ending with an ``end`` token; RuleError on a bad character."""

    def fail(msg: str, col: int) -> RuleError:
        return RuleError(msg, source, col, text)

    if len(text) > MAX_LENGTH:
        raise fail(f"expression longer than {MAX_LENGTH} characters", 1)
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        col = pos + 1
        if text.startswith("model(", pos) and (ref := _MODEL_REF.match(text, pos)):
            tokens.append(Token("point", f"{ref.group(2)}.{ref.group(3)}", col))
            pos = ref.end()
            continue
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = _HINTS.get(ch)
            raise fail(
                f"unexpected character {ch!r} at column {col}" + (f" ({hint})" if hint else ""), col
            )
        kind = m.lastgroup or ""
        word = m.group()
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "num" and (u := _UNIT.match(text, pos)):
            pos = u.end()
            seconds = (
                float(word) / 1000.0 if u.group(1) == "ms" else float(word) * _SECONDS[u.group(1)]
            )
            tokens.append(Token("dur", text[col - 1 : pos], col, seconds))
            continue
        if kind == "num" and (c := _SAMPLES.match(text, pos)):
            if not word.isdigit() or int(word) < 1:
                raise fail(f"a sample count must be a whole number >= 1 at column {col}", col)
            pos = c.end()
            tokens.append(Token("count", text[col - 1 : pos], col, float(int(word))))
            continue
        if pos < len(text) and kind == "num" and (text[pos].isalnum() or text[pos] in "_."):
            end = pos
            while end < len(text) and (text[end].isalnum() or text[end] in "_."):
                end += 1
            raise fail(f"invalid number {text[col - 1 : end]!r} at column {col}", col)
        if kind == "path":  # an asset path: line1/press1.temperature
            kind = "point"
        if kind == "name":
            parts = word.split(".")
            if len(parts) > 2:
                raise fail(
                    f"invalid point name {word!r} at column {col} (expected 'device.point')", col
                )
            if len(parts) == 2 and not parts[1]:
                raise fail(
                    f"expected a point name after '.' at column {col + len(word)}", col + len(word)
                )
            if len(parts) == 2:
                kind = "point"
            elif word in _KEYWORDS:
                kind = "kw"
        tokens.append(Token(kind, word, col))
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, text: str, names: Sequence[str], ids: dict[str, int], source: str) -> None:
        self.text = text
        self.source = source
        self.names = names
        self.ids = ids
        self.tokens = tokenize(text, source)
        self.i = 0
        self.nest = 0  # open parentheses, calls and prefix operators around the current token

    # -- helpers ---------------------------------------------------------------------------
    def error(self, msg: str, col: int) -> RuleError:
        return RuleError(msg, self.source, col, self.text)

    def expected(self, what: str) -> RuleError:
        tok = self.tokens[self.i]
        return self.error(f"expected {what} at column {tok.col}, found {_describe(tok)}", tok.col)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, *texts: str) -> Token | None:
        tok = self.tokens[self.i]
        if tok.kind == kind and (not texts or tok.text in texts):
            self.i += 1
            return tok
        return None

    def enter(self, tok: Token) -> None:
        self.nest += 1
        if self.nest > MAX_DEPTH:
            raise self.error(
                f"expression nested too deeply (more than {MAX_DEPTH} levels) at column {tok.col}",
                tok.col,
            )

    def deeper(self, node: Node) -> Node:
        if node.depth > MAX_DEPTH:
            raise self.error(
                f"expression nested too deeply (more than {MAX_DEPTH} levels) at column {node.col}",
                node.col,
            )
        return node

    # -- grammar ---------------------------------------------------------------------------
    def parse(self) -> Node:
        node = self.or_()
        if self.peek().kind != "end":
            raise self.expected("an operator or end of expression")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while tok := self.accept("kw", "or"):
            node = self.deeper(BoolOp(tok.col, "or", node, self.and_()))
        return node

    def and_(self) -> Node:
        node = self.not_()
        while tok := self.accept("kw", "and"):
            node = self.deeper(BoolOp(tok.col, "and", node, self.not_()))
        return node

    def not_(self) -> Node:
        if tok := self.accept("kw", "not"):
            self.enter(tok)
            node = self.deeper(Not(tok.col, self.not_()))
            self.nest -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        node = self.sum_()
        if tok := self.accept("op", "==", "!=", "<", "<=", ">", ">="):
            node = self.deeper(Compare(tok.col, tok.text, node, self.sum_()))
            nxt = self.peek()
            if nxt.kind == "op" and nxt.text in ("==", "!=", "<", "<=", ">", ">="):
                raise self.error(
                    f"comparisons cannot be chained at column {nxt.col} (join them with 'and')",
                    nxt.col,
                )
        return node

    def sum_(self) -> Node:
        node = self.product()
        while tok := self.accept("op", "+", "-"):
            node = self.deeper(BinOp(tok.col, tok.text, node, self.product()))
        return node

    def product(self) -> Node:
        node = self.unary()
        while tok := self.accept("op", "*", "/", "%"):
            node = self.deeper(BinOp(tok.col, tok.text, node, self.unary()))
        return node

    def unary(self) -> Node:
        if tok := self.accept("op", "-"):
            self.enter(tok)
            node = self.deeper(Neg(tok.col, self.unary()))
            self.nest -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        tok = self.peek()
        if tok.kind == "num":
            self.i += 1
            return Const(tok.col, float(tok.text))
        if tok.kind in ("dur", "count"):
            self.i += 1
            return Const(tok.col, tok.value, "s" if tok.kind == "dur" else "samples")
        if tok.kind == "kw" and tok.text in ("true", "false"):
            self.i += 1
            return Const(tok.col, tok.text == "true")
        if tok.kind in ("name", "point") and self.tokens[self.i + 1].text == "(":
            return self.call()
        if tok.kind == "point":
            self.i += 1
            return self.point(tok)
        if tok.kind == "name":
            raise self.error(
                f"unknown name {tok.text!r} at column {tok.col}: points are written "
                f"'device.point'{self.suggest(tok.text)}",
                tok.col,
            )
        if self.accept("op", "("):
            self.enter(tok)
            node = self.or_()
            if not self.accept("op", ")"):
                raise self.expected("')'")
            self.nest -= 1
            return node
        raise self.expected("a number, duration, point, function call or '('")

    def call(self) -> Node:
        name = self.take()
        arity = FUNCTIONS.get(name.text)
        if arity is None:
            known = ", ".join(sorted(FUNCTIONS))
            raise self.error(
                f"unknown function {name.text!r} at column {name.col} (known: {known})", name.col
            )
        self.enter(self.take())  # "("
        args = [self.or_()]
        while self.accept("op", ","):
            args.append(self.or_())
        if not self.accept("op", ")"):
            raise self.expected("',' or ')'")
        self.nest -= 1
        lo, hi = arity
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"at least {lo}"
            raise self.error(
                f"{name.text}() takes {want} argument{'s' if lo != 1 else ''}, "
                f"got {len(args)} at column {name.col}",
                name.col,
            )
        return self.deeper(Call(name.col, name.text, tuple(args)))

    def point(self, tok: Token) -> Node:
        pid = self.ids.get(tok.text)
        if pid is None:
            raise self.error(
                f"unknown point {tok.text!r} at column {tok.col}{self.suggest(tok.text)}", tok.col
            )
        return PointRef(tok.col, pid, tok.text)

    def suggest(self, word: str) -> str:
        close = difflib.get_close_matches(word, self.names, n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""


def parse(text: str, names: Sequence[str], source: str = "<expr>") -> Node:
    """Parse ``text`` against the point ``names`` (index = point id) into an expression tree.

    Raises
    ------
    RuleError
        On any syntax error, unknown point or unknown function, with the column.
    """
    ids = {name: i for i, name in enumerate(names)}
    ids.update(getattr(names, "aliases", None) or {})  # asset paths (core.points.PointNames)
    if not text.strip():
        raise RuleError("empty expression", source, 1, text)
    return _Parser(text, names, ids, source).parse()
