"""One compiled rule: its expressions, actions and state machine.

States: *idle* -> (``when`` true) *holding* -> (held ``for``, cooldown over, ``repeat`` reached)
*active* -> (``clear`` true, held ``clear_for``) -> *idle*. An episode that does not reach the
``repeat`` count is active but *silent*: it runs no actions and clears without effects, so it is
counted once however long it lasts.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from gateway.config import (
    AlarmAction,
    EventAction,
    LogAction,
    RuleConfig,
    SetAction,
    WriteAction,
)
from gateway.rules.alarms import AlarmState
from gateway.rules.compiler import CompiledExpr, EvalContext, Updater, Value, compile_expression
from gateway.rules.effects import (
    AlarmCleared,
    AlarmRaised,
    Effect,
    EventRaised,
    LogMessage,
    PointSet,
    WriteRequest,
)
from gateway.rules.errors import RuleError
from gateway.rules.nodes import Compare
from gateway.rules.template import MessageTemplate

_NAN = math.nan
Condition = Callable[[], bool | None]


class Shared:
    """What all rules of one engine act on besides the values: write times, virtual sets."""

    __slots__ = ("ctx", "names", "last_write", "pending_sets", "on_alarm")

    def __init__(self, ctx: EvalContext, names: Sequence[str]) -> None:
        self.ctx = ctx
        self.names = names
        self.last_write: dict[str, float] = {}  # point -> ts of the last write (rate limit)
        self.pending_sets: list[tuple[int, float, float]] = []  # (point id, ts, value)
        self.on_alarm: Callable[[Rule, str, float], None] = lambda rule, what, ts: None


class _Target:
    """A compiled ``write`` or ``set``: target point and value expression."""

    __slots__ = ("kind", "point", "pid", "expr", "value", "min_interval")

    def __init__(
        self, kind: str, point: str, pid: int, expr: CompiledExpr, value: Callable[[], Value],
        min_interval: float = 0.0,
    ) -> None:  # fmt: skip
        self.kind = kind
        self.point = point
        self.pid = pid
        self.expr = expr
        self.value = value
        self.min_interval = min_interval


class Rule:
    """A rule compiled against an :class:`EvalContext`; :meth:`step` evaluates it once."""

    def __init__(self, cfg: RuleConfig, shared: Shared, ids: dict[str, int]) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.severity = cfg.severity
        self.enabled = cfg.enabled
        self.shared = shared
        ctx, _names = shared.ctx, shared.names
        self.values = ctx.values
        src = self.src = cfg.source or f"<rule {cfg.name}>"
        for key in ("for_", "clear_for", "cooldown", "repeat_within"):
            v = getattr(cfg, key)
            if not isinstance(v, int | float) or not v >= 0:
                raise RuleError(
                    f"rule {cfg.name!r}: '{key.rstrip('_')}' must be a duration >= 0, got {v!r}",
                    src,
                )
        self.hold = float(cfg.for_)
        self.clear_for = float(cfg.clear_for)
        self.cooldown = float(cfg.cooldown)
        self.repeat_count = int(cfg.repeat_count)
        self.repeat_within = float(cfg.repeat_within)
        self.updaters: list[Updater] = []
        when = self._expr("when", cfg.when)
        self.exprs = [when]
        self.when: Condition = when.bind_condition(ctx, self.updaters)
        if cfg.clear is not None and cfg.hysteresis is not None:
            raise RuleError(f"rule {cfg.name!r}: give either 'clear' or 'hysteresis'", src)
        if cfg.hysteresis is not None:
            clear = self._expr("hysteresis", _hysteresis_clear(when, float(cfg.hysteresis), src))
        elif cfg.clear is not None:
            clear = self._expr("clear", cfg.clear)
        else:
            clear = None
        if clear is not None:
            self.exprs.append(clear)
            self.clear: Condition = clear.bind_condition(ctx, self.updaters)
        else:
            self.clear = _negate(self.when)
        reads: set[int] = set()
        self.actions: list[tuple[str, Any]] = []
        self.alarms = 0
        for action in cfg.actions:
            if isinstance(action, AlarmAction | EventAction | LogAction):
                kind = type(action).__name__.removesuffix("Action").lower()
                text = action.message or (cfg.name if kind == "alarm" else "")
                tmpl = self._template(f"{kind} message", text)
                reads |= set(tmpl.points)
                render = tmpl.bind(ctx, self.updaters)
                level = action.level if isinstance(action, LogAction) else ""
                self.actions.append((kind, (render, level)))
                self.alarms += kind == "alarm"
            elif isinstance(action, WriteAction | SetAction):
                target = self._target(action, ids)
                reads |= set(target.expr.points)
                self.exprs.append(target.expr)
                self.actions.append((target.kind, target))
            else:
                raise RuleError(f"rule {cfg.name!r}: unsupported action {action!r}", src)
        for e in self.exprs:
            reads |= set(e.points)
        self.value_ids = tuple(sorted(reads))
        self.trigger_ids = tuple(sorted(set(when.triggers) | set(clear.triggers if clear else ())))
        self.time_dependent = any(e.time_dependent for e in self.exprs)
        self.timed = bool(self.hold or self.clear_for or self.cooldown or self.time_dependent)
        # state
        self.active = False
        self.alarmed = False  # actions ran for the current episode (False: silent episode)
        self.hold_start: float | None = None
        self.clear_start: float | None = None
        self.last_fire: float | None = None
        self.episodes: collections.deque[float] = collections.deque()
        self.since: float | None = None
        self.message = ""
        self.evaluations = 0
        self.firings = 0
        self.clears = 0
        self.suppressed = 0
        self.writes_refused = 0
        self.timed_n = 0
        self.timed_time = 0.0

    # -- compile helpers ---------------------------------------------------------------------
    def _relabel(self, err: RuleError, what: str) -> RuleError:
        msg = f"rule {self.name!r}, {what}: {err.message}"
        for key, line, col in self.cfg.positions:
            if key == what and err.column is not None and ":" in self.src:
                file = self.src.rsplit(":", 1)[0]
                return RuleError(msg, f"{file}:{line}", err.column, err.text, col + err.column - 1)
        return RuleError(msg, self.src, err.column, err.text)

    def _expr(self, what: str, text: object) -> CompiledExpr:
        if isinstance(text, bool):
            text = "1" if text else "0"
        elif isinstance(text, int | float):
            text = repr(text)  # YAML `value: 0` may arrive as a number
        if not isinstance(text, str):
            raise RuleError(
                f"rule {self.name!r}, {what}: expected an expression, got {text!r}", self.src
            )
        try:
            return compile_expression(text, self.shared.names, self.src)
        except RuleError as err:
            raise self._relabel(err, what) from None

    def _template(self, what: str, text: str) -> MessageTemplate:
        if not isinstance(text, str):
            raise RuleError(
                f"rule {self.name!r}, {what}: expected a string, got {text!r}", self.src
            )
        try:
            return MessageTemplate(text, self.shared.names, self.src)
        except RuleError as err:
            raise self._relabel(err, what) from None

    def _target(self, action: WriteAction | SetAction, ids: dict[str, int]) -> _Target:
        kind = "write" if isinstance(action, WriteAction) else "set"
        expr = self._expr(f"{kind} {action.point} value", action.value)
        interval = float(action.min_interval) if isinstance(action, WriteAction) else 0.0
        value = expr.bind(self.shared.ctx, self.updaters)
        return _Target(kind, action.point, ids[action.point], expr, value, interval)

    # -- evaluation ----------------------------------------------------------------------------
    def step(self, ts: float, out: list[Effect]) -> None:
        """Evaluate at ``ts`` (a sample of a trigger point, or a tick)."""
        n = self.evaluations = self.evaluations + 1
        # Time one evaluation in 16: two clock reads per evaluation would cost a third of it.
        t0 = perf_counter() if n & 15 == 1 else 0.0
        for u in self.updaters:
            u()
        if self.active:
            c = self.clear()
            if c:  # None (unknown) is falsy: nothing happens
                if self.clear_for > 0.0:
                    if self.clear_start is None:
                        self.clear_start = ts
                    if ts - self.clear_start >= self.clear_for:
                        self._on_clear(ts, out)
                else:
                    self._on_clear(ts, out)
            elif c is False:
                self.clear_start = None
        else:
            c = self.when()
            if c:
                start = self.hold_start
                if start is None:
                    self.hold_start = start = ts
                if ts - start >= self.hold:
                    self._episode(ts, out)
            elif c is False:
                self.hold_start = None
        if t0:
            self.timed_time += perf_counter() - t0
            self.timed_n += 1

    def tick(self, now: float, out: list[Effect]) -> None:
        """Let holds, clear holds and cooldowns elapse without a new sample."""
        if self.time_dependent:
            self.step(now, out)
        elif self.active:
            if self.clear_start is not None and now - self.clear_start >= self.clear_for:
                self.step(now, out)
        elif self.hold_start is not None and now - self.hold_start >= self.hold:
            if self.last_fire is None or now - self.last_fire >= self.cooldown:
                self.step(now, out)

    @property
    def eval_time(self) -> float:
        """Estimated total evaluation time: mean of the timed evaluations x evaluations."""
        return self.timed_time / self.timed_n * self.evaluations if self.timed_n else 0.0

    def _episode(self, ts: float, out: list[Effect]) -> None:
        if self.cooldown and self.last_fire is not None and ts - self.last_fire < self.cooldown:
            self.suppressed += 1  # stays holding: fires once the cooldown is over
            return
        self.hold_start = None
        self.active = True
        if self.repeat_count > 1:
            q = self.episodes
            q.append(ts)
            while q and q[0] <= ts - self.repeat_within:
                q.popleft()
            if len(q) < self.repeat_count:
                self.alarmed = False  # a silent episode: counted, no actions
                return
            q.clear()
        self._on_fire(ts, out)

    def snapshot(self) -> dict[str, float]:
        vals = self.values
        return {
            self.shared.names[i]: _NAN if (v := vals[i]) is None else float(v)
            for i in self.value_ids
        }

    def _on_fire(self, ts: float, out: list[Effect]) -> None:
        self.alarmed = True
        self.since = self.last_fire = ts
        self.firings += 1
        snapshot: dict[str, float] | None = None
        for kind, arg in self.actions:
            if kind in ("write", "set"):
                self._write(arg, ts, out)
                continue
            render, level = arg
            msg = render()
            if kind == "log":
                out.append(LogMessage(self.name, level, msg, ts))
                continue
            if snapshot is None:
                snapshot = self.snapshot()
            if kind == "alarm":
                self.message = msg
                out.append(AlarmRaised(self.name, self.severity, msg, ts, snapshot))
            else:
                out.append(EventRaised(self.name, self.severity, msg, ts, snapshot))
        if self.alarms:
            self.shared.on_alarm(self, "raised", ts)

    def _write(self, t: _Target, ts: float, out: list[Effect]) -> None:
        v = t.value()
        if v is None or v != v:
            why = "unknown" if v is None else "NaN"
            msg = f"{t.kind} {t.point} skipped: value '{t.expr.text}' is {why}"
            out.append(LogMessage(self.name, "warning", msg, ts))
            return
        if t.kind == "set":
            self.shared.pending_sets.append((t.pid, ts, float(v)))
            out.append(PointSet(self.name, t.point, t.pid, float(v), ts))
            return
        last = self.shared.last_write.get(t.point)
        if last is not None and ts - last < t.min_interval:
            self.writes_refused += 1
            msg = (f"write {t.point} = {float(v):g} refused: rate limit (last write "
                   f"{ts - last:.3g}s ago, min_interval {t.min_interval:g}s)")  # fmt: skip
            out.append(LogMessage(self.name, "warning", msg, ts))
            return
        self.shared.last_write[t.point] = ts
        out.append(WriteRequest(self.name, t.point, float(v), ts))

    def _on_clear(self, ts: float, out: list[Effect]) -> None:
        self.active = False
        self.hold_start = self.clear_start = None
        if not self.alarmed:
            return
        self.alarmed = False
        self.since = ts
        self.clears += 1
        if self.alarms:
            snapshot = self.snapshot()
            for kind, arg in self.actions:
                if kind == "alarm":
                    self.message = msg = arg[0]()
                    out.append(AlarmCleared(self.name, self.severity, msg, ts, snapshot))
            self.shared.on_alarm(self, "cleared", ts)

    def restore(self, state: AlarmState) -> None:
        """Take over a persisted active alarm: it is not raised again, it clears once."""
        if state.active:
            self.active = self.alarmed = True
            self.since = self.last_fire = state.since
            self.message = state.message


def _negate(f: Condition) -> Condition:
    def not_when() -> bool | None:
        c = f()
        return None if c is None else not c

    return not_when


def _hysteresis_clear(when: CompiledExpr, band: float, src: str) -> str:
    """``x > limit`` with band h -> ``x < (limit) - h``; other shapes are an error."""
    tree = when.tree
    if not isinstance(tree, Compare) or tree.op not in (">", ">=", "<", "<="):
        raise RuleError(
            "'hysteresis' needs a `when` of the form `x > limit` (or >=, <, <=); "
            "write a `clear` condition instead",
            src,
        )
    col = tree.col - 1
    left, right = when.text[:col].strip(), when.text[col + len(tree.op) :].strip()
    if tree.op in (">", ">="):
        return f"{left} < ({right}) - {band!r}"
    return f"{left} > ({right}) + {band!r}"
