"""The demo's story without processes: the simulated factory's physics and the demo config's rules
in one loop on a fast clock, writes fed back to the machines as the gateway would."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.config import GatewayConfig, load_config
from gateway.core.model import SampleBatch
from gateway.core.reload import point_periods
from gateway.core.runtime import build_point_table
from gateway.drivers.sim import SignalModel, demo_factory
from gateway.rules import AlarmCleared, AlarmRaised, RuleEngine
from gateway.rules.effects import Effect, WriteRequest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.yaml"


@dataclass
class Story:
    """Every effect of a run, with helpers for the alarm timeline."""

    effects: list[Effect] = field(default_factory=list)
    vibration: list[tuple[float, float]] = field(default_factory=list)

    def alarms(self, rule: str) -> list[tuple[str, float]]:
        return [
            ("raised" if isinstance(e, AlarmRaised) else "cleared", e.ts)
            for e in self.effects
            if isinstance(e, AlarmRaised | AlarmCleared) and e.rule == rule
        ]

    def writes(self, point: str) -> list[tuple[float, float]]:
        return [
            (e.ts, e.value)
            for e in self.effects
            if isinstance(e, WriteRequest) and e.point == point
        ]


def run_story(
    seconds: float,
    config: GatewayConfig | None = None,
    step: float = 0.1,
    machines: dict[str, SignalModel] | None = None,
) -> Story:
    """``seconds`` of the demo factory polled every ``step`` (the demo's fast poll group) with
    the demo's rules ticked like the runtime; a rule's write lands on the machine at once.
    ``machines`` replaces some of the factory's signal models (by device name)."""
    config = config or load_config(DEMO)
    points = build_point_table(config)
    engine = RuleEngine(config.rules, points, periods=point_periods(config))
    machines = {spec.name: spec.model() for spec in demo_factory()} | (machines or {})
    names = [  # the Modbus machines' points (the OPC UA machine's rules are not in the story)
        (points.id_of(f"{dev.name}.{p.name}"), dev.name, p.name)
        for dev in config.devices
        if dev.name in machines
        for p in dev.points
    ]
    story = Story()
    n = int(round(seconds / step))
    for k in range(n + 1):
        t = k * step
        for m in machines.values():
            m.update(t)
        values = {name: m.values() for name, m in machines.items()}
        batch = SampleBatch(
            np.array([pid for pid, _, _ in names], np.uint32),
            np.full(len(names), t),
            np.array([values[dev][p] for _, dev, p in names], np.float64),
            np.zeros(len(names), np.uint8),
        )
        story.vibration.append((t, values["motor1"]["vibration"]))
        points.ingest(batch)
        effects = engine.process(batch) + engine.tick(t)
        for eff in effects:
            if isinstance(eff, WriteRequest):
                dev, _, point = eff.point.partition(".")
                machines[dev].write(point, eff.value)
        story.effects.extend(effects)
    return story
