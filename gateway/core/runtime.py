"""The runtime supervisor: wires drivers -> point table -> rules -> uplink in one asyncio loop.

Every stage is synchronous on the hot path except I/O: a driver hands a poll's :class:`SampleBatch` to
:meth:`Runtime.on_batch`, which records it, runs the rules over every sample, and submits one telemetry
record to the uplink (whose writer thread does the fsync). Effects the rules produce (alarms, writes,
logs) are executed here, because only the runtime knows both the rules and the drivers.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.config import GatewayConfig
from gateway.core import records
from gateway.core.httpd import StatusServer
from gateway.core.metrics import Metrics, RateMeter
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.core.sdnotify import SystemdNotifier
from gateway.drivers.modbus_tcp import ModbusTcpDevice, WriteError
from gateway.rules.effects import AlarmCleared, AlarmRaised, LogMessage, WriteRequest
from gateway.rules.engine import RuleEngine
from gateway.uplink.client import Uplink

_log = logging.getLogger("gateway.runtime")

TICK_S = 0.1  # rule timers (for:) progress at least this often without new samples
HEALTH_STALE_S = 2.0  # /health turns 503 when the run loop has not ticked for this long
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
    return table


class RuntimeStartError(RuntimeError):
    """The gateway cannot start as configured (the message says what to change)."""


class DeadbandFilter:
    """Decides which samples go upstream: all of them, or only changes beyond a point's deadband."""

    def __init__(self, points: PointTable) -> None:
        n = len(points)
        self._has = np.array([p.deadband is not None for p in points.infos], bool)
        self._band = np.array([p.deadband or 0.0 for p in points.infos], np.float64)
        self._sent = np.full(n, np.nan)
        self._sent_q = np.full(n, 255, np.uint8)
        self.enabled = bool(self._has.any())

    def __call__(self, batch: SampleBatch) -> SampleBatch:
        if not self.enabled:
            return batch
        ids = batch.point_ids
        sent = self._sent[ids]
        with np.errstate(invalid="ignore"):
            moved = ~(np.abs(batch.values - sent) <= self._band[ids])
        moved &= ~(np.isnan(batch.values) & np.isnan(sent))
        keep = ~self._has[ids] | moved | (batch.quality != self._sent_q[ids])
        self._sent[ids[keep]] = batch.values[keep]
        self._sent_q[ids[keep]] = batch.quality[keep]
        return batch if keep.all() else batch.select(keep)


class Runtime:
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
        self.points = build_point_table(config)
        self.rules = RuleEngine(config.rules, self.points)
        self.uplink = Uplink(config.uplink, config.id, clock=clock)
        self.metrics = Metrics()
        self._rate = RateMeter(time.monotonic)
        self._deadband = DeadbandFilter(self.points)
        self.model_hash, self._model_payload = records.point_model(config.id, self.points.infos)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_EVENTS)
        self._write_tasks: set[asyncio.Task[None]] = set()
        self.devices: dict[str, ModbusTcpDevice] = {}
        for dev in config.devices:
            ids = {
                f"{dev.name}.{p.name}": self.points.id_of(f"{dev.name}.{p.name}")
                for p in dev.points
            }
            self.devices[dev.name] = ModbusTcpDevice(
                dev, ids, self.on_batch, self.on_device_event, clock=clock
            )
        self._device_of_point = {
            f"{dev.name}.{p.name}": dev.name for dev in config.devices for p in dev.points
        }
        self._status_server: StatusServer | None = None
        if config.metrics_listen:
            self._status_server = StatusServer(
                config.metrics_listen, self.render_metrics, self.status, self.health
            )
        self._describe_metrics()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.uplink.start()
        self.uplink.submit(records.STREAM_META, self._model_payload)
        if self._status_server is not None:
            try:
                await self._status_server.start()
            except OSError as exc:
                await self.uplink.stop()
                raise RuntimeStartError(
                    f"gateway.metrics_listen {self.config.metrics_listen}: {exc.strerror}; "
                    "choose a free host:port or set metrics_listen: null"
                ) from exc
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
        self._running = True
        self._last_tick = time.monotonic()
        self.notifier.ready(f"running: {len(self.devices)} devices, {len(self.points)} points")
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), TICK_S)
                except TimeoutError:
                    pass
                self._apply(self.rules.tick(self.clock()))
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
        for dev in self.devices.values():
            await dev.stop()
        if self._write_tasks:
            await asyncio.wait(self._write_tasks, timeout=5.0)
        if self._status_server is not None:
            await self._status_server.stop()
        await self.uplink.stop()
        _log.info("gateway %s stopped", self.config.id)

    # -- data path ----------------------------------------------------------------------------
    def on_batch(self, batch: SampleBatch) -> None:
        """A driver's poll result: record it, run the rules, queue it for the uplink."""
        n = len(batch)
        if not n:
            return
        self._rate.add(n)
        self.metrics.inc("samples_total", n)
        bad = int(np.count_nonzero(batch.quality != Quality.GOOD))
        if bad:
            self.metrics.inc("samples_bad_total", bad)
        self.points.ingest(batch)
        effects = self.rules.process(batch)
        if effects:
            self._apply(effects)
        upstream = self._deadband(batch)
        if len(upstream):
            self.uplink.submit(
                records.STREAM_TELEMETRY, records.encode_telemetry(self.model_hash, upstream)
            )

    def on_device_event(self, event: DeviceEvent) -> None:
        level = logging.WARNING if event.kind == "offline" else logging.INFO
        _log.log(level, "device %s %s %s", event.device, event.kind, event.detail)
        self._event("device", event.ts, device=event.device, state=event.kind, detail=event.detail)

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
        device = self.devices[self._device_of_point[req.point]]
        try:
            await device.write(req.point, req.value)
        except WriteError as exc:
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

    # -- operability --------------------------------------------------------------------------
    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("samples_total", "counter", "Samples received from all drivers")
        m.describe(
            "samples_bad_total", "counter", "Samples with bad quality (timeouts, exceptions)"
        )
        m.describe("alarms_total", "counter", "Alarm transitions by rule and state")
        m.describe("writes_total", "counter", "Device writes executed for rules, by outcome")
        m.add_collector(self._collect)

    def _collect(self) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        out: list[tuple[str, tuple[tuple[str, str], ...], float]] = [
            ("samples_per_second", (), self._rate.rate),
        ]
        up: dict[str, Any] = self.uplink.stats()
        out.append(("uplink_connected", (), 1.0 if up.get("link") == "connected" else 0.0))
        for key in ("submitted", "committed", "sent", "acks", "retransmits", "oldest_age_s"):
            if isinstance(up.get(key), int | float):
                out.append((f"uplink_{key}", (), float(up[key])))
        for stream, st in (up.get("streams") or {}).items():
            for key in ("depth", "acked_hw", "next_seq"):
                if isinstance(st.get(key), int | float):
                    out.append((f"queue_{key}", (("stream", stream),), float(st[key])))
        for name, dev in self.devices.items():
            for key, value in dev.stats().items():
                if isinstance(value, bool | int | float):
                    out.append((f"device_{key}", (("device", name),), float(value)))
        for rule, st in self.rules.stats().items():
            for key, value in st.items():
                out.append((f"rule_{key}", (("rule", rule),), float(value)))
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness for ``/health`` (Docker HEALTHCHECK): started and the run loop still turning."""
        age = time.monotonic() - self._last_tick
        ok = self._running and age < HEALTH_STALE_S
        return ok, {
            "status": "ok" if ok else ("stale" if self._running else "not running"),
            "gateway": self.config.id,
            "loop_age_s": round(age, 3) if self._running else None,
            "uplink": self.uplink.stats().get("link"),
        }

    def render_metrics(self) -> str:
        return self.metrics.render()

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for `gateway demo` and operators."""
        pts = []
        for info in self.points.infos:
            v = float(self.points.last_value[info.id])
            pts.append(
                {
                    "name": info.name,
                    "value": None if v != v else v,
                    "unit": info.unit,
                    "ts": float(self.points.last_ts[info.id]),
                    "quality": Quality(int(self.points.last_quality[info.id])).name.lower(),
                    "writable": info.writable,
                }
            )
        return {
            "gateway": self.config.id,
            "ts": self.clock(),
            "samples_per_second": self._rate.rate,
            "samples_total": self.metrics.get("samples_total"),
            "points": pts,
            "devices": {name: dev.stats() for name, dev in self.devices.items()},
            "alarms": [dataclasses.asdict(a) for a in self.rules.alarms()],
            "uplink": self.uplink.stats(),
            "recent": list(self.recent),
        }
