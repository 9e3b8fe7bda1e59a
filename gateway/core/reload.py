"""Hot reload of the rules (and model files) from the config on disk, all or nothing.

The file watch and the cloud's ``reload_rules`` command read and parse in a worker thread, so a
large file does not stall the event loop; a file that cannot be read or used is refused with a
bounded message and the running rules stay. Mixed into :class:`~gateway.core.runtime.Runtime`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.bounded import clip
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.core import records
from gateway.core.metrics import Metrics
from gateway.core.points import PointTable
from gateway.model.assets import point_paths
from gateway.model.birth import birth_record
from gateway.rules.alarms import AlarmPersistence
from gateway.rules.engine import RuleEngine
from gateway.rules.errors import RuleError

_log = logging.getLogger("gateway.runtime")


def point_periods(config: GatewayConfig) -> dict[str, float]:
    """Poll period of every device point: sizes the rings that rule windows read."""
    return {
        f"{dev.name}.{p.name}": dev.poll_groups[p.poll]
        for dev in config.devices
        for p in dev.points
        if p.poll in dev.poll_groups
    }


def build_rule_engine(
    config: GatewayConfig,
    points: PointTable,
    previous: RuleEngine | None = None,
    store: AlarmPersistence | None = None,
) -> RuleEngine:
    """The config's rules over ``points``; alarm state in ``store`` (a reload keeps the
    previous engine's)."""
    return RuleEngine(
        config.rules, points, alarm_store=store, previous=previous, periods=point_periods(config)
    )


def _read_config(source: str) -> GatewayConfig | str:
    """The config at ``source`` for a reload, or why it cannot be used (bounded text)."""
    try:
        return load_config(source)
    except ConfigError as exc:
        return _first_issues(exc)
    except Exception as exc:  # noqa: BLE001 - a bad file must never stop a running gateway
        _log.exception("rule reload failed while reading %s", source)
        return _unexpected(source, exc)


def _unexpected(source: str, exc: Exception) -> str:
    return (
        f"{source}: cannot be applied ({type(exc).__name__}: {clip(str(exc))}); run "
        "`gateway check` on it"
    )


def _first_issues(err: ConfigError, shown: int = 20) -> str:
    """The first issues of a rejected reload: enough to act on, bounded for logs and events."""
    lines = [clip(str(issue), 300) for issue in err.issues[:shown]]
    if len(err.issues) > shown:
        lines.append(f"... and {len(err.issues) - shown} more issues (`gateway check` lists all)")
    return "\n".join(lines)


class RuleReloads:
    """Rule and model reload for the runtime (which provides the attributes declared here)."""

    config: GatewayConfig
    points: PointTable
    rules: RuleEngine
    metrics: Metrics
    clock: Callable[[], float]
    _watched: dict[str, tuple[int, int] | None]
    _reload_task: asyncio.Task[dict[str, Any]] | None
    _reload_lock: asyncio.Lock
    _write_tasks: set[asyncio.Task[Any]]
    model_hash: str  # the model version telemetry is written under
    _model_payload: bytes
    uplink: Any

    def _event(self, kind: str, ts: float, **fields: Any) -> None:
        raise NotImplementedError

    def _apply(self, effects: list[Any]) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        raise NotImplementedError

    async def swap_model(
        self, name: str, file: str, sha256: str, reference: str | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _rule_file_stamps(self) -> dict[str, tuple[int, int] | None]:
        files = [self.config.source, *self.config.rule_files] if self.config.source else []
        out: dict[str, tuple[int, int] | None] = {}
        for f in files:
            try:
                st = os.stat(f)
                out[f] = (st.st_mtime_ns, st.st_size)
            except OSError:
                out[f] = None
        return out

    def poll_rule_files(self) -> dict[str, Any] | None:
        """Reload the rules if the config or a rule file changed on disk (mtime/size)."""
        stamps = self._rule_file_stamps()
        if stamps == self._watched:
            return None
        self._watched = stamps
        return self.reload_rules()

    def _watch_rule_files(self) -> None:
        """The run loop's file watch: a changed file is reloaded in the background."""
        if self._reload_task is not None and not self._reload_task.done():
            return
        stamps = self._rule_file_stamps()
        if stamps == self._watched:
            return
        self._watched = stamps
        self._reload_task = asyncio.get_running_loop().create_task(self.reload_rules_async())
        self._write_tasks.add(self._reload_task)
        self._reload_task.add_done_callback(self._write_tasks.discard)

    def reload_rules(self) -> dict[str, Any]:
        """Re-read the config file and swap in its rules, all or nothing.

        Device and virtual-point changes need a restart and are refused. Unchanged rules keep
        their state (holds, windows, alarms). A file that cannot be read or used is refused with
        a bounded message; the running rules stay. Returns ``{"ok", "error", "rules",
        "carried", "replaced"}``. Blocking; a running gateway uses :meth:`reload_rules_async`.
        """
        return self._apply_reload(_read_config(self.config.source))

    async def reload_rules_async(self) -> dict[str, Any]:
        """:meth:`reload_rules` with the files read and parsed in a worker thread, so that a
        large file does not stall the event loop; one reload at a time. For the file watch and
        the cloud's ``reload_rules`` command."""
        async with self._reload_lock:
            loaded = await asyncio.to_thread(_read_config, self.config.source)
            return self._apply_reload(loaded)

    def _apply_reload(self, new: GatewayConfig | str) -> dict[str, Any]:
        outcome: dict[str, Any] = {"ok": False, "error": "", "rules": len(self.rules.rule_names)}
        if isinstance(new, str):
            return self._reject(outcome, new)
        try:
            if (
                new.devices != self.config.devices
                or new.virtual_points != self.config.virtual_points
            ):
                raise RuleError(
                    "devices or virtual_points changed: only rules reload at run time; "
                    "restart the gateway to apply the rest"
                )
            swaps = self._model_swaps(new)
            self.points.aliases = point_paths(new.assets)  # rules may name the new asset paths
            engine = build_rule_engine(new, self.points, previous=self.rules)
        except RuleError as exc:
            self.points.aliases = point_paths(self.config.assets)
            return self._reject(outcome, str(exc)[:4000])
        except Exception as exc:  # noqa: BLE001 - a bad file must never stop a running gateway
            self.points.aliases = point_paths(self.config.assets)
            _log.exception("rule reload failed while applying %s", self.config.source)
            return self._reject(outcome, _unexpected(self.config.source, exc))
        self.rules = engine
        self.config = dataclasses.replace(
            self.config, rules=new.rules, rule_files=new.rule_files, models=new.models,
            assets=new.assets,
        )  # fmt: skip
        self._announce_model()
        for model in swaps:
            self._spawn(self.swap_model(model.name, model.file, model.sha256, model.reference))
        self._watched = self._rule_file_stamps()
        self._apply(engine.initial_effects)
        replaced = [n for n in engine.rule_names if n not in engine.carried]
        outcome.update(
            ok=True, rules=len(engine.rule_names), carried=engine.carried, replaced=replaced
        )
        self.metrics.inc("rule_reloads_total", labels=(("outcome", "applied"),))
        _log.info(
            "rules reloaded: %d rules, %d kept their state",
            len(engine.rule_names),
            len(engine.carried),
        )
        self._event(
            "rules", self.clock(), state="reloaded", rules=outcome["rules"], replaced=replaced
        )
        return outcome

    def _announce_model(self) -> None:
        """After a reload: if the information model changed, it is a new version; its birth
        record is queued and telemetry from now on names it (records already queued keep the
        version they were written under, so the cloud resolves each with its own)."""
        version, payload = birth_record(self.config, self.points.infos)
        if version == self.model_hash:
            return
        self.model_hash, self._model_payload = version, payload
        if not self.uplink.submit(records.STREAM_META, payload):
            _log.error("model %s: the uplink refused its birth record (queue full?)", version)
        _log.info("information model changed: version %s announced", version)

    def _reject(self, outcome: dict[str, Any], error: str) -> dict[str, Any]:
        outcome["error"] = error
        self.metrics.inc("rule_reloads_total", labels=(("outcome", "rejected"),))
        _log.error("rule reload rejected, the old rules keep running:\n%s", error)
        self._event("rules", self.clock(), state="reload_rejected", detail=error)
        return outcome

    def _model_swaps(self, new: GatewayConfig) -> list[Any]:
        """Models whose file, hash or reference changed; any other model change needs a restart."""
        old = {m.name: m for m in self.config.models}
        swaps = []
        for m in new.models:
            before = old.get(m.name)
            same_shape = (
                before is not None
                and dataclasses.replace(before, file=m.file, sha256=m.sha256, reference=m.reference)
                == m
            )
            if not same_shape:
                raise RuleError(
                    f"model {m.name}: only file, sha256 and reference can change at run time; "
                    "restart the gateway to apply the rest"
                )
            if before != m:
                swaps.append(m)
        if len(new.models) != len(old):
            raise RuleError("models added or removed: restart the gateway to apply")
        return swaps
