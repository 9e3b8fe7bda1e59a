"""The rule engine: every sample, in order, through the rules that read its point.

Semantics
---------
* **Every sample counts.** :meth:`RuleEngine.process` walks a batch in order; after updating the
  value of point *i* it re-evaluates only the rules that trigger on *i* (points in ``when`` or
  ``clear``, except those read through ``latest()``), with that sample's own timestamp. A
  condition true for one sample in the middle of a batch fires at that sample's time even if
  the batch's last value does not satisfy it; windows evaluated then end at that sample.
* **Unknown changes nothing.** A sample whose quality is not GOOD (or whose value is NaN) makes its
  point unknown until the next good sample; points never seen are unknown too. A condition that
  evaluates to unknown (three-valued logic, see :mod:`gateway.rules.compiler`) neither fires nor
  clears, and a running ``for:`` hold keeps its start time: a short dropout inside a hold does not
  restart it. The alternative (reset on unknown) would let a flaky link suppress an alarm forever.
* **for / clear_for / cooldown.** Holds run on sample time; :meth:`RuleEngine.tick` lets them
  elapse without samples, and re-evaluates rules that use ``stale()``.
* **Fire once per episode.** A fired rule is active until its clear condition (``clear:``,
  ``hysteresis:``, else ``not when``) is true; alarms raise once and clear once; write, set, event
  and log actions run on fire only. Writes to one point closer than ``min_interval`` are refused.
* **Virtual points.** A ``set`` action updates a ``virtual.<name>`` point at once: it goes into the
  point table (ring, last value), and rules that read it run before the next input sample
  (at most :data:`MAX_CASCADE` sets per input sample, against set loops).
* **Alarm state** (active/cleared x acked/unacked) is kept in an alarm store when one is given
  (the runtime's commits it with the alarm events, see :mod:`gateway.rules.alarms`), so a
  restart neither raises an active alarm again nor forgets an unacknowledged one.
* **Hot reload.** ``RuleEngine(new_rules, points, previous=old)`` carries the state of every rule
  whose logic did not change (holds, stateful functions, alarms), and the alarm state of all.
* **Deterministic.** All time comes from sample timestamps and ``tick(now)``; the only clock read
  is ``perf_counter`` for the ``eval_time_s`` statistic (estimated from every 16th evaluation).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from gateway.config import RuleConfig, SetAction, WriteAction
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.rules.alarms import AlarmPersistence, AlarmState
from gateway.rules.compiler import EvalContext, Value
from gateway.rules.effects import AlarmAcked, AlarmCleared, Effect, LogMessage
from gateway.rules.errors import RuleError
from gateway.rules.functions import MAX_WINDOW_SAMPLES
from gateway.rules.rule import Rule, Shared

_GOOD = int(Quality.GOOD)
_log = logging.getLogger("gateway.rules")
#: Most virtual-point sets processed after one input sample (a set loop is cut off there).
MAX_CASCADE = 64


class RuleEngine:
    """Compiled rules over a :class:`PointTable`, fed with sample batches.

    Parameters
    ----------
    rules : sequence of RuleConfig
        All rules, enabled or not (disabled ones are checked but never run).
    points : PointTable
        Resolves point names; its last good values seed the engine's view. Rings of points read
        through windows are grown to fit (see ``periods``).
    alarm_store : AlarmPersistence, optional
        Where alarm states persist across restarts.
    previous : RuleEngine, optional
        The engine being replaced (hot reload): unchanged rules keep their state.
    periods : mapping of point name -> seconds, optional
        Expected sample period per point, to size rings for time windows (``avg(p, 10s)`` at a
        100 ms poll needs ~100 samples). Points without a period keep their ring size.

    Raises
    ------
    RuleError
        On the first rule that does not compile, with ``file:line:column``.
    """

    def __init__(
        self,
        rules: Sequence[RuleConfig],
        points: PointTable,
        *,
        alarm_store: AlarmPersistence | None = None,
        previous: RuleEngine | None = None,
        periods: Mapping[str, float] | None = None,
    ) -> None:
        self._points = points
        names = points.names()
        self._ids = {n: i for i, n in enumerate(names)}
        carry = previous is not None and previous._points is points
        self._ctx: EvalContext
        self._shared: Shared
        if previous is not None and carry:
            self._ctx = previous._ctx
            self._shared = previous._shared
            self._ctx.grow(len(names))
        else:
            self._ctx = _seed(points)
            self._shared = Shared(self._ctx, names)
        self._shared.names = names
        self._store: AlarmPersistence | None = alarm_store
        if alarm_store is None and previous is not None:
            self._store = previous._store
        old = {r.name: r for r in previous._rules} if carry and previous else {}
        seen: set[str] = set()
        self._rules: list[Rule] = []
        self.carried: list[str] = []
        for cfg in rules:
            if cfg.name in seen:
                raise RuleError(f"duplicate rule name {cfg.name!r}", cfg.source)
            seen.add(cfg.name)
            self._check_targets(cfg, names)
            prior = old.get(cfg.name)
            if prior is not None and prior.cfg.same_logic(cfg):
                self._rules.append(prior)
                self.carried.append(cfg.name)
            else:
                self._rules.append(Rule(cfg, self._shared, self._ids))
        # Compiled: from here on nothing raises, so a failed reload leaves `previous` untouched.
        self._shared.on_alarm = self._on_alarm
        self._alarm_states: dict[str, AlarmState] = {}
        #: Saves of the alarm state that raised (kept in memory; the next transition retries).
        self.save_errors = 0
        self.initial_effects: list[Effect] = []
        self._restore_alarms(previous)
        for rule, cfg in zip(self._rules, rules, strict=True):
            rule.cfg = cfg  # a carried rule may have moved in its file
        self._by_point: list[tuple[Rule, ...]] = [() for _ in names]
        for rule in self._rules:
            if rule.enabled:
                for pid in rule.trigger_ids:
                    self._by_point[pid] += (rule,)
        self._timed = [r for r in self._rules if r.enabled and r.timed]
        # The points some rule reads: only their samples are walked one by one (see process).
        self._read = np.zeros(len(names), bool)
        for rule in self._rules:
            self._read[list(rule.value_ids)] = True
        if carry and previous is not None:
            # Points the old rules did not read have no view yet: seed it from the table.
            was = np.zeros(len(names), bool)
            was[: len(previous._read)] = previous._read
            _reseed(self._ctx, points, np.flatnonzero(self._read & ~was).tolist())
        self.ring_sizes = self._size_rings(periods or {})

    # -- building ------------------------------------------------------------------------------
    def _check_targets(self, cfg: RuleConfig, names: list[str]) -> None:
        infos = self._points.infos
        src = cfg.source or f"<rule {cfg.name}>"
        for action in cfg.actions:
            if not isinstance(action, WriteAction | SetAction):
                continue
            kind = "write" if isinstance(action, WriteAction) else "set"
            if action.point not in self._ids:
                close = difflib.get_close_matches(action.point, names, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RuleError(
                    f"rule {cfg.name!r}: unknown {kind} target {action.point!r}{hint}", src
                )
            info = infos[self._ids[action.point]]
            if kind == "write" and info.device == "virtual":
                raise RuleError(
                    f"rule {cfg.name!r}: {action.point!r} is a virtual point; use a set action",
                    src,
                )
            if kind == "write" and not info.writable:
                raise RuleError(
                    f"rule {cfg.name!r}: write target {action.point!r} is not writable "
                    "(set writable: true on the point)",
                    src,
                )
            if kind == "set" and info.device != "virtual":
                raise RuleError(
                    f"rule {cfg.name!r}: set target {action.point!r} is not a virtual point "
                    "(declare it under virtual_points:; use write for device points)",
                    src,
                )

    def _restore_alarms(self, previous: RuleEngine | None) -> None:
        known = dict(previous._alarm_states) if previous is not None else {}
        if previous is None and self._store is not None:
            known = self._store.load()
        for rule in self._rules:
            if not rule.alarms:
                continue
            state = known.pop(rule.name, None)
            if state is None:
                state = AlarmState(rule.name, rule.active, rule.since, rule.severity, rule.message)
            elif rule.name not in self.carried:
                rule.restore(state)
            self._alarm_states[rule.name] = dataclasses.replace(state, severity=rule.severity)
        ts = self._ctx.now if self._ctx.now == self._ctx.now else 0.0
        for name, state in known.items():  # alarm rules that are gone
            if state.active:
                msg = "rule removed; alarm cleared"
                self.initial_effects.append(AlarmCleared(name, state.severity, msg, ts, {}))
        if known and self._store is not None:
            self._save()

    def _size_rings(self, periods: Mapping[str, float]) -> dict[str, int]:
        need: dict[int, int] = {}
        for rule in self._rules:
            for expr in rule.exprs:
                for pid, unit, amount in expr.windows():
                    if unit == "samples":
                        n = int(amount)
                    else:
                        period = periods.get(self._shared.names[pid])
                        if not period or period <= 0:
                            continue
                        n = int(math.ceil(amount / period * 1.25)) + 2
                    need[pid] = max(need.get(pid, 0), min(n, MAX_WINDOW_SAMPLES))
        sizes: dict[str, int] = {}
        for pid, n in need.items():
            sizes[self._shared.names[pid]] = self._points.ensure_capacity(pid, n)
        return sizes

    # -- running -------------------------------------------------------------------------------
    def process(self, batch: SampleBatch) -> list[Effect]:
        """Walk ``batch`` in order and return the effects of every rule it triggered."""
        out: list[Effect] = []
        n = len(batch)
        if n == 0:
            return out
        point_ids = batch.point_ids
        try:
            read = self._read[point_ids]
        except IndexError:  # a point registered after the engine was built
            self._grow(int(point_ids.max()))
            read = self._read[point_ids]
        ctx = self._ctx
        if ctx.start != ctx.start:
            ctx.start = float(batch.ts[0])
        # Only samples of points a rule reads change what a rule sees: the others (most of a
        # large installation's points) are skipped in one vectorised step; their view is read
        # from the point table when asked for (``values``).
        if not read.all():
            keep = np.flatnonzero(read)
            if not keep.shape[0]:
                return out
            point_ids = point_ids[keep]
            ids, ts = point_ids.tolist(), batch.ts[keep].tolist()
            xs, qs = batch.values[keep].tolist(), batch.quality[keep].tolist()
        else:
            ids, ts = point_ids.tolist(), batch.ts.tolist()
            xs, qs = batch.values.tolist(), batch.quality.tolist()
        n = len(ids)
        vals, latest, last_good = ctx.values, ctx.latest, ctx.last_good_ts
        by_point = self._by_point
        pending = self._shared.pending_sets
        for k in range(n):
            pid = ids[k]
            x = xs[k]
            t = ts[k]
            if qs[k] == _GOOD and x == x:
                vals[pid] = latest[pid] = x
                last_good[pid] = t
            else:
                vals[pid] = None
            rules = by_point[pid]
            if rules:
                ctx.now = t
                for rule in rules:
                    rule.step(t, out)
                if pending:
                    self._drain(out)
        return out

    def tick(self, now: float) -> list[Effect]:
        """Let ``for``/``clear_for``/``cooldown`` elapse and re-check ``stale()`` at ``now``."""
        out: list[Effect] = []
        ctx = self._ctx
        if ctx.start != ctx.start:
            ctx.start = now
        ctx.now = now
        for rule in self._timed:
            rule.tick(now, out)
        if self._shared.pending_sets:
            self._drain(out)
        return out

    def _drain(self, out: list[Effect]) -> None:
        """Apply virtual-point sets and run the rules that read them."""
        pending = self._shared.pending_sets
        ctx = self._ctx
        now = ctx.now
        for _ in range(MAX_CASCADE):
            if not pending:
                break
            pid, t, v = pending.pop(0)
            self._points.ingest(
                SampleBatch(
                    np.array([pid], np.uint32), np.array([t]), np.array([v]),
                    np.array([_GOOD], np.uint8),
                )
            )  # fmt: skip
            ctx.values[pid] = ctx.latest[pid] = v
            ctx.last_good_ts[pid] = t
            ctx.now = t
            for rule in self._by_point[pid]:
                rule.step(t, out)
        else:
            if pending:
                point = self._shared.names[pending[0][0]]
                pending.clear()
                msg = f"more than {MAX_CASCADE} virtual point sets in a row (a set loop via {point}?); dropped the rest"
                out.append(LogMessage("", "error", msg, now))
        ctx.now = now

    def _grow(self, max_id: int) -> None:
        # Points registered after the engine was built: no rule reads them, but keep indexes valid.
        missing = max_id + 1 - len(self._by_point)
        if missing > 0:
            self._ctx.grow(max_id + 1)
            self._by_point.extend([()] * missing)
            self._read = np.concatenate([self._read, np.zeros(missing, bool)])

    # -- alarms --------------------------------------------------------------------------------
    def _on_alarm(self, rule: Rule, what: str, ts: float) -> None:
        old = self._alarm_states.get(rule.name)
        if what == "raised":
            state = AlarmState(rule.name, True, ts, rule.severity, rule.message, acked=False)
        else:
            base = old or AlarmState(rule.name, False, ts, rule.severity, rule.message)
            state = dataclasses.replace(base, active=False, since=ts, message=rule.message)
        self._alarm_states[rule.name] = state
        self._save()

    def _save(self) -> None:
        if self._store is None:
            return
        try:
            self._store.save(list(self._alarm_states.values()))
        except Exception as exc:  # a store must never end the sample path (the poll task)
            self.save_errors += 1
            if self.save_errors == 1 or self.save_errors % 100 == 0:
                _log.error("alarm state not saved (%s; %d failures); kept in memory", exc,
                           self.save_errors)  # fmt: skip

    def ack(self, rule: str, by: str, ts: float) -> list[Effect]:
        """Acknowledge the alarm of ``rule`` (API for operators and the cloud downlink).

        Returns ``[AlarmAcked]``, or ``[]`` when it was already acknowledged (acks are
        idempotent, so a re-delivered downlink command is harmless).

        Raises
        ------
        KeyError
            When ``rule`` has no alarm action.
        """
        state = self._alarm_states.get(rule)
        if state is None:
            raise KeyError(f"no alarm rule named {rule!r}")
        if state.acked:
            return []
        self._alarm_states[rule] = dataclasses.replace(state, acked=True, acked_by=by, acked_ts=ts)
        self._save()
        return [AlarmAcked(rule, state.severity, by, ts, state.active)]

    def alarms(self) -> list[AlarmState]:
        """Current state of every enabled rule that has an alarm action."""
        enabled = {r.name for r in self._rules if r.enabled}
        return [s for name, s in self._alarm_states.items() if name in enabled]

    # -- inspection ----------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, float | int]]:
        """Per rule: evaluations, firings, clears, active (0/1), suppressed (cooldown),
        writes_refused (rate limit), eval_time_s (every 16th evaluation timed, scaled up)."""
        return {
            r.name: {
                "evaluations": r.evaluations,
                "firings": r.firings,
                "clears": r.clears,
                "active": int(r.active and r.alarmed),
                "suppressed": r.suppressed,
                "writes_refused": r.writes_refused,
                "eval_time_s": r.eval_time,
            }
            for r in self._rules
        }

    @property
    def rule_names(self) -> list[str]:
        return [r.name for r in self._rules]

    @property
    def values(self) -> list[Value]:
        """The engine's view of every point (None: unknown). Points no rule reads are not
        followed sample by sample; their view is brought up to date from the table here."""
        self._grow(len(self._points) - 1)
        _reseed(self._ctx, self._points, np.flatnonzero(~self._read).tolist())
        return self._ctx.values


def _reseed(ctx: EvalContext, points: PointTable, pids: list[int]) -> None:
    """The view of points ``pids`` from the table's last samples (as :func:`_seed`)."""
    last_value, last_ts, last_q = points.last_value, points.last_ts, points.last_quality
    for pid in pids:
        if pid >= last_value.shape[0]:
            continue
        v, q = float(last_value[pid]), int(last_q[pid])
        good = q == _GOOD and v == v
        ctx.values[pid] = v if good else None
        if good:
            ctx.latest[pid] = v
            ctx.last_good_ts[pid] = float(last_ts[pid])


def _seed(points: PointTable) -> EvalContext:
    vals: list[Value] = [
        float(v) if q == _GOOD and v == v else None
        for v, q in zip(points.last_value.tolist(), points.last_quality.tolist(), strict=True)
    ]
    ctx = EvalContext(vals, points.rings)
    for i, (t, v) in enumerate(zip(points.last_ts.tolist(), vals, strict=True)):
        if v is not None:
            ctx.last_good_ts[i] = t
    return ctx
