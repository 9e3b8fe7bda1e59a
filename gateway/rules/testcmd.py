"""``gateway rules test RULES --data FILE [--plot out.png]``: dry-run rules on a recording.

``RULES`` is a rule file (a list of rules, ``{rules: [...]}`` or a rule pack with ``--param``) or
a whole gateway config (its devices define the points). Prints every firing, clear, write, set,
event and log line with its time; ``--expect`` compares with an expected JSONL file (the format
of ``tests/rules_cases``) and ``--plot`` draws the timeline (needs matplotlib:
``pip install edge-gateway[plot]``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from gateway.rules.engine import RuleEngine
from gateway.rules.replay import (
    DataError,
    Replay,
    describe,
    estimate_periods,
    read_data,
    replay,
    table_for,
)
from gateway.timefmt import Stamps


class RulesTestError(Exception):
    """Rules or data that cannot be replayed; ``str()`` is what to print."""


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise RulesTestError(f"--param {item!r}: expected NAME=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value
    return out


def probes_for(engine: RuleEngine) -> dict[str, tuple[str, Any]]:
    """Derived series worth plotting: each compared side that is a function of one point."""
    from gateway.rules.compiler import CompiledExpr
    from gateway.rules.nodes import Compare, PointRef, children, point_ids, to_text

    out: dict[str, tuple[str, Any]] = {}
    names = [info.name for info in engine._points.infos]

    def walk(node: Any) -> None:
        if isinstance(node, Compare):
            for side in (node.left, node.right):
                ids = point_ids(side)
                if len(ids) == 1 and not isinstance(side, PointRef):
                    label = to_text(side)
                    expr = CompiledExpr(label, "<plot>", side, names)
                    out.setdefault(label, (names[next(iter(ids))], expr.bind(engine._ctx)))
        for child in children(node):
            walk(child)

    for rule in engine._rules:
        for expr in rule.exprs[:2]:
            walk(expr.tree)
    return out


def run(
    rules_path: str | Path, data_path: str | Path, params: dict[str, Any] | None = None,
    probe: bool = False,
) -> Replay:  # fmt: skip
    """Load rules and data and replay; raises :class:`RulesTestError` with the message to show."""

    from gateway.config import ConfigError, load_config, load_rule_file
    from gateway.rules.errors import RuleError

    try:
        rows, names = read_data(data_path)
    except DataError as exc:
        raise RulesTestError(str(exc)) from None
    try:
        periods = estimate_periods(rows)
        if _is_gateway_config(rules_path):
            from gateway.core.reload import build_rule_engine
            from gateway.core.runtime import build_point_table

            config = load_config(rules_path)
            points = build_point_table(config)
            for name in names:
                if name not in points:
                    raise RulesTestError(f"{data_path}: point {name!r} is not in {rules_path}")
            # Built as the runtime builds it (same ring sizes), so windows see the same samples.
            engine = build_rule_engine(config, points)
        else:
            rules = load_rule_file(rules_path, params)
            points = table_for(rules, names)
            engine = RuleEngine(rules, points, periods=periods)
    except ConfigError as exc:
        raise RulesTestError(str(exc)) from None
    except RuleError as exc:
        pointer = exc.pointer()
        raise RulesTestError(str(exc) + ("\n" + pointer if pointer else "")) from None
    result = replay(engine, points, rows, probes=probes_for(engine) if probe else None)
    result.effects[:0] = engine.initial_effects
    return result


def compare(got: list[dict[str, object]], expected_path: str | Path) -> list[str]:
    """Differences between replay records and an expected JSONL file ([] when equal)."""
    want = [
        json.loads(line) for line in Path(expected_path).read_text().splitlines() if line.strip()
    ]
    problems: list[str] = []
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        if g is None or w is None or not _same(g, w):
            problems.append(f"#{i + 1}: expected {json.dumps(w)}\n     got      {json.dumps(g)}")
    return problems


def _same(got: dict[str, object], want: dict[str, object]) -> bool:
    for key, w in want.items():
        g = got.get(key)
        if isinstance(w, float | int) and isinstance(g, float | int) and not isinstance(w, bool):
            if not math.isclose(float(g), float(w), rel_tol=1e-9, abs_tol=1e-6):
                return False
        elif g != w:
            return False
    return True


def main(args: argparse.Namespace) -> int:
    try:
        result = run(args.rules, args.data, _params(args.param or []), probe=bool(args.plot))
    except RulesTestError as exc:
        print(exc, file=sys.stderr)
        return 1
    records = result.records()
    stamps = Stamps()
    for eff in result.effects:
        print(json.dumps(effect_record_jsonable(eff)) if args.json else describe(eff, stamps))
    stats = result.engine.stats() if result.engine else {}
    fired = sum(int(s["firings"]) for s in stats.values())
    print(
        f"{len(result.rows)} samples, {len(stats)} rules, {fired} firings, {len(records)} effects",
        file=sys.stderr,
    )
    code = 0
    if args.expect:
        problems = compare(records, args.expect)
        for p in problems:
            print(p, file=sys.stderr)
        code = 1 if problems else 0
        print(
            f"expected: {'OK' if not problems else f'{len(problems)} differences'}", file=sys.stderr
        )
    if args.plot:
        try:
            from gateway.rules.plot import plot_replay
        except ImportError as exc:
            print(
                f"--plot needs matplotlib (pip install edge-gateway[plot]): {exc}", file=sys.stderr
            )
            return 2
        plot_replay(result, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return code


def effect_record_jsonable(eff: Any) -> dict[str, object]:
    from gateway.rules.effects import effect_record

    rec = effect_record(eff)
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()}


def add_parser(sub: Any) -> None:
    """Register ``rules test`` under the ``gateway`` command's subparsers."""
    rules = sub.add_parser("rules", help="work with rule files (dry-run on recorded data)")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")
    s = rsub.add_parser("test", help="replay a recording through rules; print what fires when")
    s.add_argument("rules", help="rule file, rule pack or gateway config")
    s.add_argument(
        "--data", required=True,
        help="recording (as `gateway export` writes): .csv (ts,point,value or wide) or .jsonl",
    )  # fmt: skip
    s.add_argument("--plot", help="write a timeline plot (PNG) of the signals and firings")
    s.add_argument("--expect", help="expected effects (JSONL); exit 1 on any difference")
    s.add_argument("--param", action="append", help="rule pack parameter NAME=VALUE (repeatable)")
    s.add_argument("--json", action="store_true", help="print effects as JSON lines")
    s.set_defaults(fn=main)


def _is_gateway_config(path: str | Path) -> bool:
    """A whole gateway config (a top-level ``gateway:``), as opposed to a rule file or pack;
    read within the config limits (a bad file is reported by the loader that follows)."""
    from yaml import YAMLError
    from yaml.nodes import MappingNode

    from gateway.config.input import InputError, compose, read_text

    try:
        root = compose(read_text(path))
    except (OSError, InputError, YAMLError):
        return False
    return isinstance(root, MappingNode) and any(k.value == "gateway" for k, _ in root.value)
