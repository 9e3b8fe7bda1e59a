"""Fuzzing the rule expression parser and compiler: no crash, no hang, every error a clean message.

The default suite runs a bounded number of examples; ``make fuzz`` runs the slow variant with
``GATEWAY_FUZZ_EXAMPLES`` (default there: 20000 per strategy).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.points import PointTable
from gateway.rules import RuleError, compile_expression
from gateway.rules.compiler import EvalContext
from gateway.rules.nodes import FUNCTIONS

NAMES = ["a.b", "c.d", "m.v"]
VOCAB = [
    *NAMES, "a.", ".b", "a.b.c", "x", "if", *FUNCTIONS, "(", ")", ",", "+", "-", "*", "/", "%",
    "<", "<=", ">", ">=", "==", "!=", "=", "!", "and", "or", "not", "true", "false", "0", "1",
    "2.5", "1e308", "1e-9", ".5", "10s", "500ms", "5m", "1h", "0s", "3 samples", "0 samples",
    "1.5 samples", "between", "'", "[", "^", "{", "@", "é", "\t", "  ",
]  # fmt: skip


def _table() -> PointTable:
    pt = PointTable(16)
    for n in NAMES:
        pt.add(n, n.split(".")[0], "float64")
    rng = np.random.default_rng(1)
    for pid in range(len(NAMES)):
        ts = np.arange(40, dtype=np.float64) * 0.5
        pt.rings[pid].extend(ts, rng.normal(size=40))
    return pt


TABLE = _table()
tokens = st.lists(st.sampled_from(VOCAB), max_size=40).map(" ".join)
# hypothesis can also glue tokens without spaces: "a.b>10s"
glued = st.lists(st.sampled_from(VOCAB), max_size=25).map("".join)
values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.booleans())


def check(src: str, vals: list[object]) -> None:
    t0 = time.perf_counter()
    try:
        expr = compile_expression(src, NAMES, "fuzz.yaml:3")
    except RuleError as err:
        assert err.message and "\n" not in err.message
        assert str(err).startswith("fuzz.yaml:3")
        if err.column is not None:
            assert 1 <= err.column <= len(src) + 1, (src, err.column)
        return
    finally:
        assert time.perf_counter() - t0 < 1.0, f"slow parse of {src!r}"
    ctx = EvalContext(list(vals), TABLE.rings)  # type: ignore[arg-type]
    ctx.now, ctx.start = 20.0, 0.0
    f = expr.bind(ctx)
    for _ in range(2):  # twice: stateful functions see a previous value
        v = f()
        assert v is None or isinstance(v, bool | float | int), (src, v)


def _examples(default: int) -> int:
    return int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", default))


_QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_QUICK
@given(tokens, st.lists(values, min_size=3, max_size=3))
def test_token_soup_compiles_or_fails_cleanly(src: str, vals: list[object]) -> None:
    check(src, vals)


@_QUICK
@given(glued, st.lists(values, min_size=3, max_size=3))
def test_glued_tokens(src: str, vals: list[object]) -> None:
    check(src, vals)


@_QUICK
@given(st.text(max_size=60))
def test_arbitrary_text(src: str) -> None:
    check(src, [1.0, 2.0, math.nan])


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    for src in ["(" * 5000 + "1" + ")" * 5000, "-" * 5000 + "1", "not " * 3000 + "true",
                "abs(" * 2000 + "1" + ")" * 2000, "1" + " + 1" * 2000]:  # fmt: skip
        with pytest.raises(RuleError):
            compile_expression(src, NAMES)


@pytest.mark.slow
@settings(max_examples=_examples(20000), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(tokens, glued, st.text(max_size=80)), st.lists(values, min_size=3, max_size=3))
def test_fuzz_long(src: str, vals: list[object]) -> None:
    check(src, vals)
