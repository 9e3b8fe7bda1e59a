"""The runtime supervisor: wires drivers -> point table -> rules -> uplink in one asyncio loop.

Every stage is synchronous on the hot path except I/O: a driver hands a poll's :class:`SampleBatch` to
:meth:`Runtime.on_batch`, which records it and runs the rules over every sample; at the end of the loop
turn the turn's batches go to the uplink as one telemetry record (whose writer thread does the fsync),
or are dropped at the source, counted and announced while the uplink cannot take them. Effects the
rules produce (alarms, writes, logs) are executed here, because only the runtime knows both the rules
and the drivers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.api import ApiConfigError, build_server
from gateway.config import GatewayConfig
from gateway.core import commands, health, records, status
from gateway.core.deadband import DeadbandFilter
from gateway.core.drops import SourceDrops
from gateway.core.guard import Faults
from gateway.core.httpd import StatusServer
from gateway.core.metrics import Metrics, RateMeter
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.core.reload import RuleReloads, build_rule_engine
from gateway.core.sdnotify import SystemdNotifier
from gateway.core.supervisor import stop_device
from gateway.drivers.registry import Device, DeviceFactory
from gateway.infer.wiring import add_model_points, model_runner
from gateway.model.assets import point_paths
from gateway.model.birth import birth_record
from gateway.rules.alarms import QueueAlarmStore
from gateway.rules.clock import RuleClock
from gateway.rules.effects import (
    AlarmAcked,
    AlarmCleared,
    AlarmRaised,
    EventRaised,
    LogMessage,
    PointSet,
    WriteRequest,
)
from gateway.uplink.client import Uplink
from gateway.uplink.dirlock import DirLock, DirLocked

_log = logging.getLogger("gateway.runtime")

TICK_S = 0.1  # the loop lets rule timers (for:) progress this often without new samples
RELOAD_POLL_S = 1.0  # rule files are checked for changes (mtime, size) this often
RECENT_EVENTS = 50


def build_point_table(config: GatewayConfig) -> PointTable:
    table = PointTable(ring_capacity=config.ring_capacity)
    for dev in config.devices:
        for p in dev.points:
            table.add(
                f"{dev.name}.{p.name}",
                dev.name,
                p.type,
                unit=p.unit,
                writable=p.writable,
                deadband=p.deadband,
                description=p.description,
            )
    for vp in config.virtual_points:
        table.add(
            f"virtual.{vp.name}", "virtual", "float64", unit=vp.unit, description=vp.description
        )
    add_model_points(table, config)
    table.aliases = point_paths(config.assets)  # rules may name points by asset path
    return table


class RuntimeStartError(RuntimeError):
    """The gateway cannot start as configured (the message says what to change)."""


class Runtime(RuleReloads):
    """One gateway process: its devices, point table, rules, uplink and status endpoint."""

    def __init__(
        self,
        config: GatewayConfig,
        clock: Callable[[], float] = time.time,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.notifier = notifier if notifier is not None else SystemdNotifier()
        self._running = False
        self._last_tick = -1e18
        self._lock: DirLock | None = None
        self.points = build_point_table(config)
        # Nothing a callback, rule, model or store raises may end a task: see gateway.core.guard.
        self.faults = Faults(_log)
        self.uplink = Uplink(
            config.uplink, config.id, clock=clock, command_handler=self._on_command,
            on_problem=self._uplink_problem,
        )  # fmt: skip
        # Alarm state lives in the queue and commits with its alarm events (item 9 of issue 14).
        store = QueueAlarmStore(self.uplink, legacy=Path(config.data_dir) / "alarms.json")
        self.rules = build_rule_engine(config, self.points, store=store)
        # Samples and ticks reach the rules only through this, as in `gateway rules test`.
        self.rule_clock = RuleClock()
        self._watched = self._rule_file_stamps()
        self.metrics = Metrics()
        self.rate = RateMeter(time.monotonic)
        self._deadband = DeadbandFilter(self.points)
        self._drops = SourceDrops(self.metrics, _log, time.monotonic)
        self._turn: list[SampleBatch] = []  # upstream telemetry of this loop turn
        self.model_hash, self._model_payload = birth_record(config, self.points.infos)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_EVENTS)
        self._write_tasks: set[asyncio.Task[Any]] = set()
        self._reload_task: asyncio.Task[dict[str, Any]] | None = None
        self._reload_lock = asyncio.Lock()
        self.devices: dict[str, Device] = {}
        factory = DeviceFactory(clock)
        for dev in config.devices:
            ids = {
                f"{dev.name}.{p.name}": self.points.id_of(f"{dev.name}.{p.name}")
                for p in dev.points
            }
            try:
                self.devices[dev.name] = factory.create(
                    dev, ids,
                    self.faults.wrap(f"device {dev.name}: on_batch", self.on_batch),
                    self.faults.wrap(f"device {dev.name}: on_event", self.on_device_event),
                )  # fmt: skip
            except ValueError as exc:  # a DBC that does not fit what the driver decodes
                raise RuntimeStartError(f"device {dev.name}: {exc}") from None
        self.device_of_point = {
            f"{dev.name}.{p.name}": dev.name for dev in config.devices for p in dev.points
        }
        self.models = model_runner(
            config, self.points, self.faults.wrap("model outputs", self.on_batch),
            self._model_problem,
        )  # fmt: skip
        self.selfcheck = health.SelfCheck(self)  # storage and driver supervision, /health
        self.supervisor = self.selfcheck.supervisor
        status.describe_metrics(self)
        try:  # the listener and its REST API (gateway.api)
            self._status_server: StatusServer | None = build_server(self)
        except ApiConfigError as exc:
            raise RuntimeStartError(str(exc)) from None

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._lock is None:
            queue_dir = os.path.dirname(os.path.abspath(self.config.uplink.queue))
            try:
                self._lock = DirLock([self.config.data_dir, queue_dir]).acquire()
            except DirLocked as exc:
                raise RuntimeStartError(str(exc)) from None
        try:
            await self.uplink.start()
        except BaseException:
            self._release_lock()
            raise
        self.uplink.submit(records.STREAM_META, self._model_payload)
        if self.uplink.quarantined:
            msg = f"queue file was corrupt; moved to {self.uplink.quarantined}, new epoch started"
            _log.critical("alarm uplink_queue_quarantined: %s", msg)
            self._event(
                "alarm", self.clock(), rule="uplink_queue_quarantined", state="raised",
                severity="critical", message=msg, values={},
            )  # fmt: skip
        if self._status_server is not None:
            try:
                await self._status_server.start()
            except OSError as exc:
                await self.uplink.stop()
                self._release_lock()
                raise RuntimeStartError(
                    f"gateway.metrics_listen {self.config.metrics_listen}: {exc.strerror}; "
                    "choose a free host:port or set metrics_listen: null"
                ) from exc
        if self.models is not None:
            self.models.start(asyncio.get_running_loop())
        for dev in self.devices.values():
            await dev.start()
        _log.info(
            "gateway %s started: %d devices, %d points, %d rules",
            self.config.id,
            len(self.devices),
            len(self.points),
            len(self.config.rules),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Start, run until ``stop`` is set, then stop cleanly."""
        await self.start()
        self.faults.call("rules: initial effects", self._apply, self.rules.initial_effects)
        next_poll = time.monotonic() + RELOAD_POLL_S
        self._running = True
        self._last_tick = time.monotonic()
        self.notifier.ready(f"running: {len(self.devices)} devices, {len(self.points)} points")
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), TICK_S)
                except TimeoutError:
                    pass
                self.faults.call("rules: tick", self._rule_tick)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + RELOAD_POLL_S
                    self.faults.call("rules: reload check", self._watch_rule_files)
                self.selfcheck.tick()
                # Liveness comes from this loop only: if it stops turning, the pings stop and
                # systemd's watchdog restarts the process; /health goes stale the same way.
                self._last_tick = time.monotonic()
                self.notifier.tick()
        finally:
            self._running = False
            self.notifier.stopping()
            await self.stop()
            self.notifier.close()

    async def stop(self) -> None:
        await self.selfcheck.stop()
        for name, dev in self.devices.items():
            await stop_device(name, dev)
        if self.models is not None:
            self.models.stop()
        if self._write_tasks:
            await asyncio.wait(self._write_tasks, timeout=5.0)
        if self._status_server is not None:
            await self._status_server.stop()
        self._flush_telemetry()
        await self.uplink.stop()
        self._release_lock()
        _log.info("gateway %s stopped", self.config.id)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- data path ----------------------------------------------------------------------------
    def on_batch(self, batch: SampleBatch) -> None:
        """A driver's poll result: record it, run the rules, queue it for the uplink."""
        n = len(batch)
        if not n:
            return
        self.rate.add(n)
        self.metrics.inc("samples_total", n)
        bad = int(np.count_nonzero(batch.quality != Quality.GOOD))
        if bad:
            self.metrics.inc("samples_bad_total", bad)
        self.supervisor.seen(int(batch.point_ids[0]))
        self.points.ingest(batch)
        # Each stage on its own: a rule that fails must not cost the batch its trip upstream.
        self.faults.call("rules", self._run_rules, batch)
        self.faults.call("uplink submit", self._submit_telemetry, batch)
        if self.models is not None:
            self.faults.call("models", self.models.on_batch, batch)

    def _run_rules(self, batch: SampleBatch) -> None:
        effects = self.rule_clock.feed(self.rules, batch)
        if effects:
            self._apply(effects)

    def _submit_telemetry(self, batch: SampleBatch) -> None:
        """Telemetry of one loop turn goes upstream as ONE record (see _flush_telemetry)."""
        upstream = self._deadband(batch)
        if not len(upstream):
            return
        if not self._turn:
            try:
                asyncio.get_running_loop().call_soon(self._flush_telemetry)
            except RuntimeError:  # no loop (a synchronous caller): nothing to coalesce with
                self._turn.append(upstream)
                self._flush_telemetry()
                return
        self._turn.append(upstream)

    def _flush_telemetry(self) -> None:
        """Coalesce the turn's batches into one record: the per-record costs (encoding, queue
        row, CRC, DATA, store row) are paid once per turn, not once per poll response. Under
        load more responses land in one turn, so the cost per sample falls as the load grows."""
        batches, self._turn = self._turn, []
        if batches:
            self.faults.call("uplink submit", self._submit_upstream, batches)

    def _submit_upstream(self, batches: list[SampleBatch]) -> None:
        # Back-pressure: while the queue cannot take more, drop here, before encoding (the
        # cheapest place), counted and announced; memory stays at uplink.buffer_bytes.
        why = self.uplink.refusal(records.STREAM_TELEMETRY)
        if why is None:
            merged = batches[0] if len(batches) == 1 else SampleBatch.concat(batches)
            payload = records.encode_telemetry(self.model_hash, merged)
            if self.uplink.submit(records.STREAM_TELEMETRY, payload):
                self._drops.accepted()
                return
            why = "overflow"  # refused and announced by the uplink itself
        else:
            self.uplink.refuse(records.STREAM_TELEMETRY, why)
        infos = self.points.infos
        for b in batches:
            self._drops.dropped(infos[int(b.point_ids[0])].device, len(b), why)

    def _rule_tick(self) -> None:
        self._apply(self.rule_clock.advance(self.rules, self.clock()))

    def _uplink_problem(self, alarm: str, severity: str, message: str) -> None:
        """The uplink found damage in its queue (corrupt or lost records): a local alarm."""
        self._event(
            "alarm", self.clock(), rule=alarm, state="raised", severity=severity,
            message=message, values={},
        )  # fmt: skip

    def _model_problem(self, model: str, message: str) -> None:
        """A model was disabled or a swap failed: an alarm upstream, the gateway runs on."""
        self._apply([AlarmRaised(f"model:{model}", "major", message, self.clock())])

    def on_device_event(self, event: DeviceEvent) -> None:
        level = logging.WARNING if event.kind == "offline" else logging.INFO
        _log.log(level, "device %s %s %s", event.device, event.kind, event.detail)
        self._event("device", event.ts, device=event.device, state=event.kind, detail=event.detail)

    # -- models and acknowledgement ----------------------------------------------------------
    async def swap_model(
        self, name: str, file: str, sha256: str, reference: str | None = None
    ) -> dict[str, Any]:
        """Load, self-test and atomically swap in a new model file; the old one keeps running
        on failure. For config reloads and the cloud's model-update command."""
        if self.models is None:
            return {"ok": False, "error": "no models are configured or the ML extra is missing"}
        loop = asyncio.get_running_loop()
        try:
            summary = await loop.run_in_executor(
                None, self.models.swap, name, file, sha256, reference
            )
        except Exception as exc:  # ModelError and anything the loader raises: keep running
            self._event("model", self.clock(), model=name, state="swap_rejected", detail=str(exc))
            return {"ok": False, "error": str(exc)}
        _log.info("model %s swapped to %s: %s", name, file, summary)
        self._event("model", self.clock(), model=name, state="swapped", file=file)
        return {"ok": True, "summary": summary}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._write_tasks.add(task)
        task.add_done_callback(self._write_tasks.discard)

    def ack_alarm(self, rule: str, by: str, ts: float | None = None) -> bool:
        """Acknowledge an alarm (for the cloud downlink and local operators); False if unknown."""
        try:
            effects = self.rules.ack(rule, by, self.clock() if ts is None else ts)
        except KeyError:
            return False
        self._apply(effects)
        return True

    def _apply(self, effects: list[Any]) -> None:
        for eff in effects:
            if isinstance(eff, AlarmRaised | AlarmCleared):
                state = "raised" if isinstance(eff, AlarmRaised) else "cleared"
                self.metrics.inc("alarms_total", labels=(("rule", eff.rule), ("state", state)))
                log = _log.warning if state == "raised" else _log.info
                log("alarm %s %s [%s]: %s", eff.rule, state, eff.severity, eff.message)
                self._event(
                    "alarm",
                    eff.ts,
                    rule=eff.rule,
                    state=state,
                    severity=eff.severity,
                    message=eff.message,
                    values=eff.values,
                )
            elif isinstance(eff, AlarmAcked):
                self.metrics.inc("alarms_total", labels=(("rule", eff.rule), ("state", "acked")))
                _log.info("alarm %s acknowledged by %s", eff.rule, eff.by)
                self._event(
                    "alarm", eff.ts, rule=eff.rule, state="acked", severity=eff.severity,
                    by=eff.by, active=eff.active,
                )  # fmt: skip
            elif isinstance(eff, EventRaised):
                self._event(
                    "rule_event", eff.ts, rule=eff.rule, severity=eff.severity,
                    message=eff.message, values=eff.values,
                )  # fmt: skip
            elif isinstance(eff, PointSet):
                batch = SampleBatch.uniform(
                    np.array([eff.point_id], np.uint32), eff.ts, np.array([eff.value])
                )
                self.uplink.submit(
                    records.STREAM_TELEMETRY, records.encode_telemetry(self.model_hash, batch)
                )
            elif isinstance(eff, WriteRequest):
                self.metrics.inc("rule_writes_total", labels=(("rule", eff.rule),))
                task = asyncio.get_running_loop().create_task(self._write(eff))
                self._write_tasks.add(task)
                task.add_done_callback(self._write_tasks.discard)
            elif isinstance(eff, LogMessage):
                _log.log(
                    logging.getLevelName(eff.level.upper()), "rule %s: %s", eff.rule, eff.message
                )
                self._remember(
                    {"kind": "log", "ts": eff.ts, "rule": eff.rule, "message": eff.message}
                )

    async def _write(self, req: WriteRequest) -> None:
        device = self.devices[self.device_of_point[req.point]]
        try:
            await device.write(req.point, req.value)
        except Exception as exc:  # WriteError, or a driver bug: reported the same way
            outcome, detail = "failed", str(exc)
            _log.error("write %s = %s by rule %s failed: %s", req.point, req.value, req.rule, exc)
        else:
            outcome, detail = "done", ""
            _log.info("write %s = %s by rule %s done", req.point, req.value, req.rule)
        self.metrics.inc("writes_total", labels=(("outcome", outcome),))
        self._event(
            "write",
            self.clock(),
            rule=req.rule,
            point=req.point,
            value=req.value,
            outcome=outcome,
            detail=detail,
            requested_ts=req.ts,
        )

    def _event(self, kind: str, ts: float, **fields: Any) -> None:
        self._remember({"kind": kind, "ts": ts, **fields})
        self.uplink.submit(records.STREAM_EVENTS, records.encode_event(kind, ts, **fields))

    def _remember(self, ev: dict[str, Any]) -> None:
        self.recent.append(ev)

    def event(self, kind: str, ts: float, **fields: Any) -> None:
        """Record an event upstream on the priority stream and in the recent list."""
        self._event(kind, ts, **fields)

    async def _on_command(self, kind: str, args: dict[str, Any]) -> tuple[str, str]:
        return await commands.execute(self, kind, args)

    # -- operability --------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/health`` (Docker HEALTHCHECK): started, the run loop turning, no condition active."""
        return health.health(self)

    def render_metrics(self) -> str:
        return self.metrics.render()

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for `gateway demo` and operators."""
        return status.status(self)
