"""The rule engine: every sample, in order, through the rules that read its point.

Semantics
---------
* **Every sample counts.** :meth:`RuleEngine.process` walks a batch in order; after updating the
  value of point *i* it re-evaluates only the rules that read *i* (in ``when`` or ``clear``), with
  that sample's own timestamp. A condition true for one sample in the middle of a batch fires at
  that sample's time even if the batch's last value does not satisfy it.
* **Unknown changes nothing.** A sample whose quality is not GOOD (or whose value is NaN) makes its
  point unknown until the next good sample; points never seen are unknown too. A condition that
  evaluates to unknown (three-valued logic, see :mod:`gateway.rules.compiler`) neither fires nor
  clears, and a running ``for:`` hold keeps its start time: a short dropout inside a hold does not
  restart it, and the rule fires at the first *known* true evaluation after the hold elapsed. The
  alternative (reset on unknown) would let a flaky link suppress an alarm forever.
* **for: N.** The condition must hold for N s of sample time; a false evaluation resets the hold.
  The rule fires at the first sample time at/after the hold elapsed, or at ``now`` in
  :meth:`RuleEngine.tick` when no sample arrived (tick re-evaluates, so it never fires on unknown).
* **Fire once per episode.** A fired rule is active until its clear condition (``clear:``, for
  hysteresis; else ``not when``) is true; only then can it fire again. Alarm actions raise once
  and clear once; write and log actions run on fire only.
* **Deterministic.** All time comes from sample timestamps and ``tick(now)``; the only clock read
  is ``perf_counter`` for the ``eval_time_s`` statistic (estimated from every 16th evaluation).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from time import perf_counter

from gateway.config import AlarmAction, LogAction, RuleConfig, WriteAction
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.rules.alarms import AlarmState
from gateway.rules.compiler import CompiledExpr, Value, compile_expression
from gateway.rules.effects import AlarmCleared, AlarmRaised, Effect, LogMessage, WriteRequest
from gateway.rules.errors import RuleError
from gateway.rules.template import MessageTemplate

_GOOD = int(Quality.GOOD)
_NAN = math.nan

Condition = Callable[[], bool | None]


class _WriteStep:
    __slots__ = ("point", "expr", "value")

    def __init__(self, point: str, expr: CompiledExpr, value: Callable[[], Value]) -> None:
        self.point = point
        self.expr = expr
        self.value = value


class _Rule:
    """One compiled rule and its state machine (idle -> holding -> active -> idle)."""

    __slots__ = (
        "name",
        "severity",
        "hold",
        "enabled",
        "when",
        "clear",
        "actions",
        "alarm_templates",
        "value_ids",
        "trigger_ids",
        "names",
        "values",
        "active",
        "hold_start",
        "since",
        "message",
        "evaluations",
        "firings",
        "clears",
        "timed",
        "timed_time",
    )

    def __init__(self, cfg: RuleConfig, values: list[Value], names: Sequence[str]) -> None:
        self.name = cfg.name
        self.severity = cfg.severity
        self.enabled = cfg.enabled
        self.values = values
        self.names = names
        src = cfg.source or f"<rule {cfg.name}>"
        if not isinstance(cfg.for_, int | float) or not cfg.for_ >= 0:
            raise RuleError(
                f"rule {cfg.name!r}: 'for' must be a duration >= 0, got {cfg.for_!r}", src
            )
        self.hold = float(cfg.for_)
        when = _expr(cfg, "when", cfg.when, names, src)
        self.when = when.bind_condition(values)
        if cfg.clear is not None:
            clear = _expr(cfg, "clear", cfg.clear, names, src)
            self.clear: Condition = clear.bind_condition(values)
            trigger = set(when.points) | set(clear.points)
        else:
            self.clear = _negate(self.when)
            trigger = set(when.points)
        reads = set(trigger)
        self.actions: list[MessageTemplate | _WriteStep | tuple[str, MessageTemplate]] = []
        self.alarm_templates: list[MessageTemplate] = []
        for action in cfg.actions:
            if isinstance(action, AlarmAction):
                tmpl = _template(cfg, "alarm message", action.message, names, src)
                self.alarm_templates.append(tmpl)
                self.actions.append(tmpl)
                reads |= set(tmpl.points)
            elif isinstance(action, LogAction):
                tmpl = _template(cfg, "log message", action.message, names, src)
                self.actions.append(("log", tmpl))
                reads |= set(tmpl.points)
            elif isinstance(action, WriteAction):
                step = _write(cfg, action, names, values, src)
                self.actions.append(step)
                reads |= set(step.expr.points)
            else:
                raise RuleError(f"rule {cfg.name!r}: unsupported action {action!r}", src)
        self.value_ids: tuple[int, ...] = tuple(sorted(reads))
        self.trigger_ids: tuple[int, ...] = tuple(sorted(trigger))
        self.active = False
        self.hold_start: float | None = None
        self.since: float | None = None
        self.message = ""
        self.evaluations = 0
        self.firings = 0
        self.clears = 0
        self.timed = 0
        self.timed_time = 0.0

    def step(self, ts: float, out: list[Effect]) -> None:
        """Evaluate after a sample at ``ts`` changed one of the rule's points."""
        n = self.evaluations = self.evaluations + 1
        # Time one evaluation in 16: two clock reads per evaluation would cost a third of it.
        t0 = perf_counter() if n & 15 == 1 else 0.0
        if self.active:
            if self.clear():  # None (unknown) is falsy: nothing happens
                self._on_clear(ts, out)
        else:
            c = self.when()
            if c:
                if self.hold > 0.0:
                    start = self.hold_start
                    if start is None:
                        self.hold_start = start = ts
                    if ts - start >= self.hold:
                        self._on_fire(ts, out)
                else:
                    self._on_fire(ts, out)
            elif c is False:
                self.hold_start = None
        if t0:
            self.timed_time += perf_counter() - t0
            self.timed += 1

    @property
    def eval_time(self) -> float:
        """Estimated total evaluation time: mean of the timed evaluations x evaluations."""
        return self.timed_time / self.timed * self.evaluations if self.timed else 0.0

    def tick(self, now: float, out: list[Effect]) -> None:
        """Let a running hold elapse without a new sample."""
        if self.active or self.hold_start is None or now - self.hold_start < self.hold:
            return
        self.step(now, out)

    def _snapshot(self) -> dict[str, float]:
        vals = self.values
        return {self.names[i]: _NAN if vals[i] is None else float(vals[i]) for i in self.value_ids}  # type: ignore[arg-type]

    def _on_fire(self, ts: float, out: list[Effect]) -> None:
        self.active = True
        self.hold_start = None
        self.since = ts
        self.firings += 1
        vals = self.values
        snapshot = self._snapshot() if self.alarm_templates else {}
        for action in self.actions:
            if isinstance(action, MessageTemplate):
                self.message = msg = action.render(vals)
                out.append(AlarmRaised(self.name, self.severity, msg, ts, snapshot))
            elif isinstance(action, _WriteStep):
                v = action.value()
                if v is None or v != v:
                    why = "unknown" if v is None else "NaN"
                    out.append(
                        LogMessage(
                            self.name,
                            "warning",
                            f"write to {action.point} skipped: value '{action.expr.text}' is {why}",
                            ts,
                        )
                    )
                else:
                    out.append(WriteRequest(self.name, action.point, float(v), ts))
            else:
                out.append(LogMessage(self.name, "info", action[1].render(vals), ts))

    def _on_clear(self, ts: float, out: list[Effect]) -> None:
        self.active = False
        self.hold_start = None
        self.since = ts
        self.clears += 1
        if self.alarm_templates:
            snapshot = self._snapshot()
            for tmpl in self.alarm_templates:
                self.message = msg = tmpl.render(self.values)
                out.append(AlarmCleared(self.name, self.severity, msg, ts, snapshot))


def _negate(f: Condition) -> Condition:
    def not_when() -> bool | None:
        c = f()
        return None if c is None else not c

    return not_when


def _relabel(err: RuleError, cfg: RuleConfig, what: str, src: str) -> RuleError:
    return RuleError(f"rule {cfg.name!r}, {what}: {err.message}", src, err.column, err.text)


def _expr(cfg: RuleConfig, what: str, text: str, names: Sequence[str], src: str) -> CompiledExpr:
    try:
        return compile_expression(text, names, src)
    except RuleError as err:
        raise _relabel(err, cfg, what, src) from None


def _template(
    cfg: RuleConfig, what: str, text: str, names: Sequence[str], src: str
) -> MessageTemplate:
    if not isinstance(text, str):
        raise RuleError(f"rule {cfg.name!r}, {what}: expected a string, got {text!r}", src)
    try:
        return MessageTemplate(text, names, src)
    except RuleError as err:
        raise _relabel(err, cfg, what, src) from None


def _write(
    cfg: RuleConfig, action: WriteAction, names: Sequence[str], values: list[Value], src: str
) -> _WriteStep:
    """Compile a write's value expression (the target was checked by :class:`RuleEngine`)."""
    text = action.value
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = repr(text)  # YAML `value: 0` may arrive as a number
    expr = _expr(cfg, f"write {action.point} value", text, names, src)
    return _WriteStep(action.point, expr, expr.bind(values))


class RuleEngine:
    """Compiled rules over a :class:`PointTable`, fed with sample batches.

    Parameters
    ----------
    rules : sequence of RuleConfig
        All rules, enabled or not (disabled ones are checked but never run).
    points : PointTable
        Resolves point names; its last good values seed the engine's view, so an engine built
        during a hot reload starts from what is known now.

    Raises
    ------
    RuleError
        On the first rule that does not compile, with ``file:line:column``.
    """

    def __init__(self, rules: Sequence[RuleConfig], points: PointTable) -> None:
        self._points = points
        names = [info.name for info in points.infos]
        self._values: list[Value] = [
            float(v) if q == _GOOD and v == v else None
            for v, q in zip(points.last_value.tolist(), points.last_quality.tolist(), strict=True)
        ]
        seen: set[str] = set()
        self._rules: list[_Rule] = []
        for cfg in rules:
            if cfg.name in seen:
                raise RuleError(f"duplicate rule name {cfg.name!r}", cfg.source)
            seen.add(cfg.name)
            self._rules.append(self._compile(cfg, names))
        self._by_point: list[tuple[_Rule, ...]] = [() for _ in names]
        for rule in self._rules:
            if rule.enabled:
                for pid in rule.trigger_ids:
                    self._by_point[pid] += (rule,)
        self._timed = [r for r in self._rules if r.enabled and r.hold > 0.0]

    def _compile(self, cfg: RuleConfig, names: list[str]) -> _Rule:
        infos = self._points.infos
        src = cfg.source or f"<rule {cfg.name}>"
        for action in cfg.actions:
            if isinstance(action, WriteAction):
                if action.point not in self._points:
                    close = difflib.get_close_matches(action.point, names, n=1, cutoff=0.6)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise RuleError(
                        f"rule {cfg.name!r}: unknown write target {action.point!r}{hint}", src
                    )
                if not infos[self._points.id_of(action.point)].writable:
                    raise RuleError(
                        f"rule {cfg.name!r}: write target {action.point!r} is not writable "
                        "(set writable: true on the point)",
                        src,
                    )
        return _Rule(cfg, self._values, names)

    # -- running -------------------------------------------------------------------------------
    def process(self, batch: SampleBatch) -> list[Effect]:
        """Walk ``batch`` in order and return the effects of every rule it triggered."""
        out: list[Effect] = []
        n = len(batch)
        if n == 0:
            return out
        ids = batch.point_ids.tolist()
        self._grow(int(batch.point_ids.max()))
        vals = self._values
        by_point = self._by_point
        ts = batch.ts.tolist()
        xs = batch.values.tolist()
        qs = batch.quality.tolist()
        for k in range(n):
            pid = ids[k]
            x = xs[k]
            vals[pid] = x if qs[k] == _GOOD and x == x else None
            rules = by_point[pid]
            if rules:
                t = ts[k]
                for rule in rules:
                    rule.step(t, out)
        return out

    def tick(self, now: float) -> list[Effect]:
        """Fire the rules whose ``for:`` hold elapsed by ``now`` without a new sample."""
        out: list[Effect] = []
        for rule in self._timed:
            rule.tick(now, out)
        return out

    def _grow(self, max_id: int) -> None:
        # Points registered after the engine was built: no rule reads them, but keep indexes valid.
        missing = max_id + 1 - len(self._values)
        if missing > 0:
            self._values.extend([None] * missing)
            self._by_point.extend([()] * missing)

    # -- inspection ----------------------------------------------------------------------------
    def alarms(self) -> list[AlarmState]:
        """Current state of every enabled rule that has an alarm action."""
        return [
            AlarmState(r.name, r.active, r.since, r.severity, r.message)
            for r in self._rules
            if r.enabled and r.alarm_templates
        ]

    def stats(self) -> dict[str, dict[str, float | int]]:
        """Per rule: ``evaluations``, ``firings``, ``clears``, ``active`` (0/1), ``eval_time_s``.

        ``eval_time_s`` is estimated: every 16th evaluation is timed and the mean is scaled up.
        """
        return {
            r.name: {
                "evaluations": r.evaluations,
                "firings": r.firings,
                "clears": r.clears,
                "active": int(r.active),
                "eval_time_s": r.eval_time,
            }
            for r in self._rules
        }

    @property
    def rule_names(self) -> list[str]:
        return [r.name for r in self._rules]
