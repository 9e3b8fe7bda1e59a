"""The rule packs in rules/: each one included with parameters into a gateway config and replayed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config_text, load_rule_file
from gateway.core.points import PointTable
from gateway.core.reload import point_periods
from gateway.core.runtime import build_point_table
from gateway.rules import AlarmCleared, AlarmRaised, EventRaised, RuleEngine
from gateway.rules.replay import Row, replay

ROOT = Path(__file__).resolve().parent.parent
PACKS = ROOT / "rules"

CONFIG = """
gateway: {id: gw}
uplink: {insecure: true}
devices:
  - name: motor1
    poll_groups: {default: 50ms}
    points:
      - {name: vibration, address: 0, type: float32}
  - name: press1
    poll_groups: {default: 1s}
    points:
      - {name: temp, address: 0, type: float32}
      - {name: run, table: coil, address: 0}
      - {name: power_kw, address: 2, type: float32}
rule_files:
  - include: rules/iso10816.yaml
    params: {id: motor1, point: motor1.vibration, zone_ab: 2.3, zone_bc: 4.5, zone_cd: 7.1}
  - include: rules/overheat.yaml
    params: {id: press1, point: press1.temp, limit: 80, band: 10}
  - include: rules/device_offline.yaml
    params: {id: press1, point: press1.temp, timeout: 5s}
  - include: rules/energy_per_cycle.yaml
    params: {id: press1, running: "press1.run == 1", power: press1.power_kw, max_kwh: 0.01}
"""


def engine_for(text: str = CONFIG) -> tuple[RuleEngine, PointTable]:
    config = load_config_text(text, str(ROOT / "gw.yaml"))
    points = build_point_table(config)
    return RuleEngine(config.rules, points, periods=point_periods(config)), points


def test_all_packs_load_with_params_and_rings_are_sized() -> None:
    engine, points = engine_for()
    assert "motor1_iso10816_zone_c" in engine.rule_names and "press1_offline" in engine.rule_names
    # rms(motor1.vibration, 10s) at 50 ms: ~250 samples; the press keeps the default ring
    assert engine.ring_sizes["motor1.vibration"] >= 200
    assert points.rings[points.id_of("press1.temp")].capacity == 128


def test_iso10816_zones_and_overheat_and_offline_and_energy() -> None:
    engine, points = engine_for()
    rows: list[Row] = []
    for k in range(0, 1200):  # 60 s of 20 Hz vibration: 3 mm/s RMS, then 6 mm/s RMS from 20 s
        t = k * 0.05
        amp = (3.0 if t < 20 else 6.0) * math.sqrt(2)
        rows.append((t, "motor1.vibration", amp * math.sin(2 * math.pi * 7.3 * t), 0))
    for s in range(0, 40):  # press: heats to 90 and cools; runs one cycle at 10 kW for 10 s
        temp = 60 + s * 1.5 if s < 20 else 90 - (s - 20) * 2
        rows += [
            (float(s), "press1.temp", temp, 0),
            (float(s), "press1.run", 1.0 if 5 <= s < 15 else 0.0, 0),
        ]
        rows.append((float(s), "press1.power_kw", 10.0 if 5 <= s < 15 else 0.5, 0))
    rows.sort(key=lambda r: r[0])
    effects = replay(engine, points, rows).effects
    raised = {e.rule: e for e in effects if isinstance(e, AlarmRaised)}
    events = [e for e in effects if isinstance(e, EventRaised)]
    assert "motor1_iso10816_zone_c" in raised and "motor1_iso10816_zone_d" not in raised
    assert 20 < raised["motor1_iso10816_zone_c"].ts < 32
    assert "zone C" in raised["motor1_iso10816_zone_c"].message
    assert any(e.rule == "motor1_iso10816_zone_b" and e.ts < 12 for e in events)
    assert raised["press1_overheat"].ts == pytest.approx(16.0)  # 81 at 14 s, held 2 s
    cleared = [e for e in effects if isinstance(e, AlarmCleared) and e.rule == "press1_overheat"]
    assert cleared and cleared[0].ts == pytest.approx(31.0)  # 68 < 80 - 10
    assert raised["press1_offline"].ts == pytest.approx(44.0)  # last press sample at 39 s
    energy = [e for e in events if e.rule == "press1_cycle_energy"]
    assert len(energy) == 1 and energy[0].ts == 15.0
    assert "0.0265 kWh" in energy[0].message  # trapezoid 5..15 s: 9 s x 10 kW + 5.25 kJ
    assert "press1_cycle_energy_high" in raised
    assert any(e.rule == "press1_heating_fast" for e in events)


def test_pack_parameter_errors(tmp_path: Path) -> None:
    bad = CONFIG.replace("zone_ab: 2.3", "zone_ab: 2.3, zone_xy: 1").replace(
        "params: {id: press1, point: press1.temp, timeout: 5s}", "params: {point: press1.temp}"
    )
    with pytest.raises(ConfigError) as info:
        engine_for(bad)
    text = str(info.value)
    assert "unknown parameter 'zone_xy'" in text and "the pack takes: id, point" in text
    assert "missing required parameter(s): id" in text
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "params: {a: 1}\nrules:\n  - name: r\n    when: p.x > ${b}\n    actions: [{log: x}]\n"
    )
    with pytest.raises(ConfigError, match=r"pack.yaml:4:17: unknown parameter '\$\{b\}'"):
        load_rule_file(pack)


def test_pack_standalone_with_params() -> None:
    rules = load_rule_file(PACKS / "overheat.yaml", {"id": "p", "point": "p.t", "limit": 50})
    assert [r.name for r in rules] == ["p_overheat", "p_heating_fast"]
    assert rules[0].when == "p.t > 50" and rules[0].hysteresis == 5
