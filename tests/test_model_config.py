"""The `assets:` section: types instantiated per machine, UCUM units, identifiers, strict mode,
asset-path names in rules, unit-aware rule packs, and the birth record built from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from gateway.config import ConfigError, load_config, load_config_text
from gateway.core import records
from gateway.core.runtime import build_point_table
from gateway.model.assets import find_asset, point_paths, walk
from gateway.model.birth import birth_record

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "rules" / "iso10816.yaml"

BASE = """\
gateway: {id: gw}
uplink: {insecure: true}
devices:
"""
PRESSES = "".join(
    f"""\
  - name: press{i}
    port: {5020 + i}
    points:
      - {{name: temp, address: 0, type: float32, unit: degC}}
      - {{name: vib, address: 2, type: float32}}
"""
    for i in (1, 2, 3)
)
TYPES = """\
assets:
  types:
    - name: Press
      manufacturer: Acme
      model: HP-250
      points:
        - {name: temperature, point: temp, quantity: temperature, semantic_id: "0173-1#02-AAV232#002", range: [0, 250]}
        - {name: vibration, point: vib, unit: mm/s, quantity: vibration velocity}
"""


def tree(*presses: str) -> str:
    lines = [
        "  tree:",
        "    - id: plant1",
        "      level: site",
        '      identifier: "urn:oid:1.3.6.1.4.1.32473.1"',
        "      children:",
        "        - id: line1",
        "          level: line",
        "          children:",
    ]
    lines += [f"            - {p}" for p in presses]
    return "\n".join(lines) + "\n"


THREE = tree(
    '{id: press1, type: Press, device: press1, serial: S1, identifier: "https://id.gs1.org/01/09506000134352/21/S1"}',
    "{id: press2, type: Press, device: press2, serial: S2}",
    "{id: press3, type: Press, device: press3, serial: S3, identifier: '88.100.1/press-3'}",
)


def test_a_type_instantiated_per_machine_gives_each_its_points_units_and_paths() -> None:
    cfg = load_config_text(BASE + PRESSES + TYPES + THREE)
    assert cfg.assets is not None
    paths = {path: a for path, a in walk(cfg.assets.roots)}
    assert list(paths) == ["plant1", "plant1/line1", "plant1/line1/press1",
                           "plant1/line1/press2", "plant1/line1/press3"]  # fmt: skip
    p2 = paths["plant1/line1/press2"]
    assert (p2.manufacturer, p2.model, p2.serial, p2.type) == ("Acme", "HP-250", "S2", "Press")
    temp = p2.points[0]
    assert (temp.point, temp.unit, temp.range) == ("press2.temp", "Cel", (0.0, 250.0))
    assert temp.source == "modbus_tcp://127.0.0.1:5022/1/holding/0"
    # the type's unit is given to the device points that had none; degC is carried as Cel
    units = {f"{d.name}.{p.name}": p.unit for d in cfg.devices for p in d.points}
    assert units["press3.vib"] == "mm/s" and units["press1.temp"] == "Cel"
    assert point_paths(cfg.assets)["line1/press3.vibration"] == "press3.vib"
    assert find_asset(cfg.assets, "line1/press2") == ("plant1/line1/press2", p2)


def test_configs_without_assets_keep_working_and_degc_is_an_alias() -> None:
    cfg = load_config_text(BASE + PRESSES)
    assert cfg.assets is None
    assert cfg.devices[0].points[0].unit == "Cel"


def test_birth_record_carries_the_whole_model_and_its_version_follows_it() -> None:
    cfg = load_config_text(BASE + PRESSES + TYPES + THREE)
    version, payload = birth_record(cfg, build_point_table(cfg).infos)
    rec = records.decode(payload)
    assert rec["model"] == version and rec["kind"] == "point_model"
    temp = rec["points"][0]
    assert temp["name"] == "press1.temp" and temp["unit"] == "Cel" and temp["type"] == "float32"
    assert temp["path"] == "plant1/line1/press1" and temp["asset_point"] == "temperature"
    assert temp["semantic_id"] == "0173-1#02-AAV232#002" and temp["range"] == [0.0, 250.0]
    assert temp["source"] == "modbus_tcp://127.0.0.1:5021/1/holding/0"
    assets = {a["path"]: a for a in rec["assets"]}
    assert assets["plant1"]["scheme"] == "oid"
    assert assets["plant1/line1/press1"]["scheme"] == "gs1"
    assert assets["plant1/line1/press3"]["scheme"] == "handle"
    assert assets["plant1/line1/press2"]["nameplate"] == {
        "manufacturer": "Acme", "model": "HP-250", "serial": "S2"}  # fmt: skip
    # a change of meaning alone (a serial number) is a new version
    changed = load_config_text(BASE + PRESSES + TYPES + THREE.replace("serial: S2", "serial: S9"))
    assert birth_record(changed, build_point_table(changed).infos)[0] != version
    # without assets the record is exactly the pre-model one (same hash: nothing re-announced)
    plain = load_config_text(BASE + PRESSES)
    infos = build_point_table(plain).infos
    old_body = msgpack.packb([i.to_wire() for i in infos], use_bin_type=True)
    import hashlib

    assert records.point_model(plain.id, infos)[0] == hashlib.sha256(old_body).hexdigest()[:16]


def test_rules_name_points_by_asset_path(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: hot
    when: line1/press2.temperature > 80 and avg(plant1/line1/press3.vibration, 10s) > 1
    actions: [{alarm: "hot {press2.temp:.1f}"}]
"""
    path = tmp_path / "gw.yaml"
    path.write_text(BASE + PRESSES + TYPES + THREE + rules)
    out = subprocess.run([sys.executable, "-m", "gateway", "check", str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    path.write_text(
        BASE + PRESSES + TYPES + THREE + rules.replace("press2.temperature", "press2.temp")
    )
    out = subprocess.run([sys.executable, "-m", "gateway", "check", str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "unknown point 'line1/press2.temp'" in out.stderr


def _with_pack(point: str, unit: str) -> str:
    return f"""\
gateway: {{id: gw}}
uplink: {{insecure: true}}
devices:
  - name: m1
    points:
      - {{name: vib, address: 0, type: float32, unit: {unit}}}
assets:
  tree:
    - id: line1
      children:
        - id: motor1
          device: m1
          points: [{{name: velocity, point: vib}}]
rule_files:
  - include: {PACK}
    params: {{id: m, point: {point}, zone_ab: 2.3, zone_bc: 4.5, zone_cd: 7.1}}
"""


@pytest.mark.parametrize(
    ("unit", "zone_ab", "band", "shown"),
    [("mm/s", 2.3, 0.1, "mm/s"), ("m/s", 0.0023, 0.0001, "m/s"),
     ("in/s", 2.3 / 25.4, 0.1 / 25.4, "[in_i]/s"), ("", 2.3, 0.1, "mm/s")],
)  # fmt: skip
def test_iso10816_limits_follow_the_unit_of_the_point(
    unit: str, zone_ab: float, band: float, shown: str
) -> None:
    text = _with_pack("line1/motor1.velocity", unit) if unit else _with_pack("m1.vib", "mm/s")
    if not unit:
        text = text.replace("unit: mm/s", "description: no unit")
    cfg = load_config_text(text, "gw.yaml")
    zone_b = cfg.rules[0]
    assert zone_b.when.endswith(f"> {zone_ab:.12g}") or float(
        zone_b.when.rsplit(">", 1)[1]
    ) == pytest.approx(zone_ab)
    assert zone_b.hysteresis == pytest.approx(band)
    assert f" {shown} RMS" in zone_b.actions[0].message  # type: ignore[union-attr]


def test_iso10816_refuses_a_point_of_another_quantity(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(_with_pack("m1.vib", "mm"))
    out = subprocess.run([sys.executable, "-m", "gateway", "check", str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1
    assert (
        f"{path}:16:21: rule_files[0].params.point: m1.vib is in mm, but this pack's limits "
        "are in mm/s" in out.stderr
    ), out.stderr


BAD = """\
gateway: {id: gw}
uplink: {insecure: true}
devices:
  - name: press1
    points:
      - {name: temp, address: 0, unit: degrees}
      - {name: vib, address: 1, unit: mm/s}
      - {name: spare, address: 2}
assets:
  strict: true
  tree:
    - id: line1
      children:
        - {id: press1, device: press1, identifier: "https://id.gs1.org/01/09506000134353", points: [{name: v, point: vib, unit: furlong}]}
        - {id: line1, identifier: "urn:oid:1.03.4"}
"""


def test_bad_input_is_reported_with_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    out = subprocess.run([sys.executable, "-m", "gateway", "check", str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    expect = [
        f"{path}:6:40: devices[0].points[0].unit: not a UCUM unit: 'degrees': unknown unit",
        f"{path}:8:16: devices[0].points[2].name: point press1.spare is attached to no asset, "
        "and assets.strict is true",
        f"{path}:14:52: assets.tree[0].children[0].identifier: bad identifier: "
        "'https://id.gs1.org/01/09506000134353': GS1 AI (01) 09506000134353: wrong check digit",
        f"{path}:14:129: assets.tree[0].children[0].points[0].unit: not a UCUM unit: 'furlong'",
        f"{path}:15:16: assets.tree[0].children[1].id: duplicate asset id 'line1' (first at "
        "line 12)",
        f"{path}:15:35: assets.tree[0].children[1].identifier: bad identifier: 'urn:oid:1.03.4'",
    ]
    for want in expect:
        assert any(line.startswith(want) for line in lines), (want, out.stderr)
    with pytest.raises(ConfigError):
        load_config(path)


def test_unknown_type_device_and_point_are_named(tmp_path: Path) -> None:
    text = BASE + PRESSES + TYPES + tree(
        "{id: a, type: Pres, device: press1}", "{id: b, device: pres2}",
        "{id: c, points: [{name: t, point: press1.tmp}]}", "{id: d, points: [{name: t, point: temp}]}",
    )  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "gw.yaml")
    text_issues = str(info.value)
    assert "unknown asset type 'Pres' (did you mean 'Press'?)" in text_issues
    assert "unknown device 'pres2'" in text_issues
    assert "unknown device point 'press1.tmp'" in text_issues
    assert "the asset sets no `device:`" in text_issues


def test_can_points_take_unit_and_range_from_the_dbc() -> None:
    """What the protocol knows fills in what the config leaves out (DBC: "rpm", [0|8031.875])."""
    text = f"""\
gateway: {{id: gw}}
uplink: {{insecure: true}}
devices:
  - name: truck
    driver: can
    can: {{interface: virtual, channel: t, dbc: {ROOT / "examples" / "truck.dbc"}, j1939: true}}
    points:
      - {{name: rpm, signal: EEC1.EngineSpeed}}
      - {{name: torque, signal: EEC1.Torque, unit: "%", range: [-100, 100]}}
"""
    cfg = load_config_text(text, "gw.yaml")
    rec = records.decode(birth_record(cfg, build_point_table(cfg).infos)[1])
    rpm, torque = rec["points"]
    assert rpm["unit"] == "{rev}/min" and rpm["range"] == [0.0, 8031.875]
    assert rpm["source"] == "can://t/EEC1.EngineSpeed"
    assert torque["unit"] == "%" and torque["range"] == [-100.0, 100.0]  # the config wins


def test_every_point_of_the_demo_belongs_to_an_asset() -> None:
    """The demo's factory is modelled completely (a device added to it needs its asset too)."""
    demo = load_config(ROOT / "examples" / "demo.yaml")
    assert demo.assets is not None
    attached = {p.point for _, a in walk(demo.assets.roots) for p in a.points}
    assert attached == {f"{d.name}.{p.name}" for d in demo.devices for p in d.points}
    ids = {a.id: a.identifier for _, a in walk(demo.assets.roots)}
    assert set(ids) == {"factory", "line1", "press1", "pump1", "motor1", "mould1"}
    assert all(ids.values())
