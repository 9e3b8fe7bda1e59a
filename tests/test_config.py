"""Config loading and validation: data-driven bad configs, the demo config, schema and docs sync."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from gateway.config import (
    AlarmAction,
    ConfigError,
    DeviceConfig,
    EventAction,
    GatewayConfig,
    LogAction,
    PointConfig,
    RuleConfig,
    SetAction,
    UplinkConfig,
    VirtualPointConfig,
    WriteAction,
    check_main,
    format_issues,
    load_config,
    load_config_text,
)
from gateway.config import docs as config_docs
from gateway.config.options import REQUIRED
from gateway.config.schema import TABLES
from gateway.durations import format_duration, parse_duration

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.yaml"
CASES = Path(__file__).parent / "config_cases"
CASE_DIRS = sorted(p for p in CASES.iterdir() if (p / "config.yaml").exists())
HEAD = "gateway: {id: gw1}\nuplink: {insecure: true}\n"


# --- data-driven bad configs: tests/config_cases/<case>/{config.yaml, error.txt} ---------------


def test_case_folders_are_complete() -> None:
    assert len(CASE_DIRS) >= 15
    for case in CASE_DIRS:
        assert (case / "error.txt").exists(), f"{case.name} has no error.txt"


@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the case's config.yaml fails with exactly the issues in error.txt.

    The case folder is the working directory, so messages read ``config.yaml:L:C: ...``;
    absolute paths in messages (missing rule files) are shown relative to the folder.
    """
    monkeypatch.chdir(case)
    with pytest.raises(ConfigError) as info:
        load_config("config.yaml")
    got = format_issues(info.value).replace(f"{case}/", "")
    assert got == (case / "error.txt").read_text(encoding="utf-8").rstrip("\n")


# --- the demo config ---------------------------------------------------------------------------


def test_demo_loads_with_expected_values() -> None:
    cfg = load_config(DEMO)
    assert cfg.id == "demo-gw"
    assert cfg.source == str(DEMO)
    assert cfg.data_dir == str(DEMO.parent.parent / "var" / "demo")
    assert cfg.metrics_listen == "127.0.0.1:9108"
    assert [d.name for d in cfg.devices] == ["press1", "pump1", "motor1", "mould1"]
    assert sum(len(d.points) for d in cfg.devices) == 20
    press1, pump1, motor1, mould1 = cfg.devices
    assert mould1.driver == "opcua" and mould1.opcua is not None
    assert press1.port == 5020 and press1.timeout == 0.5
    assert press1.poll_groups == {"fast": 0.1, "slow": 1.0}
    assert pump1.poll_groups == {"default": 0.2}
    points = {f"{d.name}.{p.name}": p for d in cfg.devices for p in d.points}
    assert points["press1.run"] == PointConfig(
        "run", 0, table="coil", type="bool", poll="fast", writable=True, description="Run/stop"
    )
    assert points["press1.temp"].type == "float32" and points["press1.temp"].word_order == "big"
    assert points["pump1.flow"].word_order == "little" and points["pump1.flow"].table == "input"
    assert points["motor1.vibration"].word_order == "little"
    assert points["pump1.pressure"].deadband == 0.05 and points["pump1.pressure"].scale == 0.1
    assert points["press1.temp"].deadband is None
    assert points["pump1.setpoint"].poll == "default"

    overheat, restart, unsteady, _bearing, *packs = cfg.rules
    assert overheat.name == "press1_overheat" and overheat.for_ == 2.0
    assert overheat.clear == "press1.temp < 70" and overheat.severity == "major"
    assert overheat.actions == (
        AlarmAction("press1 platen temperature {press1.temp:.1f} degC (limit 80, clears below 70)"),
        WriteAction("press1.run", "0"),
        LogAction("stopping press1 at {press1.temp:.1f} degC"),
    )
    assert overheat.source == f"{DEMO}:137"
    assert restart.actions[0] == WriteAction("press1.run", "1") and restart.clear is None
    assert unsteady.for_ == 5.0 and unsteady.severity == "minor"
    zone_d = next(r for r in packs if r.name == "motor1_iso10816_zone_d")
    assert zone_d.when == "rms(line1/motor1.vibration, 10s) > 7.1" and zone_d.for_ == 10.0
    assert zone_d.source.endswith("rules/iso10816.yaml:50")

    up = cfg.uplink
    assert up.endpoints == ("tcp://127.0.0.1:7000",) and up.insecure is False
    assert up.server_key and up.server_key.endswith("var/demo/keys/cloud.key")
    assert up.queue == str(DEMO.parent.parent / "var" / "demo" / "queue.db")
    assert up.batch_max_delay == 0.05 and up.batch_max_records == 1000
    assert up.ack_timeout == 5.0


def test_check_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main(str(DEMO)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{DEMO}: OK: 4 devices, 20 points, 8 rules"
    assert [line.split(": ")[1] for line in out[:-1]] == ["model bearing_ae", "model motor_state"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "devices: [{name: a, port: 0}]\n")
    assert check_main(str(bad)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{bad}:3:27: devices[0].port: expected an integer 1..65535; got 0",
        f"{bad}: 1 error",
    ]

    broken = tmp_path / "broken.yaml"
    broken.write_text("gateway: {id: [\n")
    assert check_main(str(broken)) == 2
    assert "invalid YAML" in capsys.readouterr().err

    assert check_main(str(tmp_path / "missing.yaml")) == 2
    assert capsys.readouterr().err.startswith(f"{tmp_path / 'missing.yaml'}: file not found\n")


# --- loader behaviour --------------------------------------------------------------------------


def test_minimal_config_gets_dataclass_defaults(tmp_path: Path) -> None:
    text = HEAD + "devices: [{name: d1, points: [{name: p, address: 3}]}]\n"
    cfg = load_config_text(text, str(tmp_path / "gw.yaml"))
    assert cfg.source == str(tmp_path / "gw.yaml")
    assert cfg.devices[0] == DeviceConfig("d1", points=(PointConfig("p", 3),))
    assert cfg.uplink == UplinkConfig(insecure=True, queue=str(tmp_path / "var" / "queue.db"))
    assert cfg.data_dir == str(tmp_path / "var")
    assert cfg.rules == ()


def test_paths_resolve_against_config_dir_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "gw.yaml").write_text(
        "gateway: {id: gw1, data_dir: state, metrics_listen: null}\n"
        "uplink: {queue: /abs/q.db, server_key: keys/cloud.key, key_dir: keys}\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config("site/gw.yaml")
    assert cfg.data_dir == str(site / "state") and cfg.metrics_listen is None
    assert cfg.uplink.queue == "/abs/q.db"
    assert cfg.uplink.server_key == str(site / "keys" / "cloud.key")
    assert cfg.uplink.key_dir == str(site / "keys") and cfg.uplink.insecure is False


def test_rule_files_both_forms_and_sources(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        "rules:\n  - name: a1\n    when: d.p > 1\n    actions: [alarm: null]\n"
    )
    (tmp_path / "rules" / "b.yaml").write_text(
        "# list form\n- {name: b1, when: d.p < 1, for: 1m, actions: [{write: {point: d.p, "
        "value: 2.5}}, {write: {point: d.p, value: true}}, {log: {message: hi}}]}\n"
    )
    (tmp_path / "rules" / "empty.yaml").write_text("# nothing yet\n")
    text = (
        HEAD + "devices: [{name: d, points: [{name: p, address: 0, writable: true}]}]\n"
        "rules: [{name: r0, when: d.p > 0, enabled: false, actions: [{alarm: {message: m}}]}]\n"
        "rule_files: [rules/a.yaml, rules/b.yaml, rules/empty.yaml]\n"
    )
    cfg = load_config_text(text, str(tmp_path / "gw.yaml"))
    assert [r.name for r in cfg.rules] == ["r0", "a1", "b1"]
    r0, a1, b1 = cfg.rules
    assert r0.enabled is False and r0.actions == (AlarmAction("m"),)
    assert a1.source == f"{tmp_path / 'rules' / 'a.yaml'}:2" and a1.actions == (AlarmAction(),)
    assert b1.source == f"{tmp_path / 'rules' / 'b.yaml'}:2" and b1.for_ == 60.0
    assert b1.actions == (WriteAction("d.p", "2.5"), WriteAction("d.p", "1"), LogAction("hi"))


def test_all_issues_are_collected_in_file_order() -> None:
    text = (
        "gateway: {id: a/b}\nuplink: {insecure: 1}\n"
        "devices:\n  - {name: 1d, port: x, timeout: 1q}\n"
        "rules:\n  - {name: r, when: '', actions: [bogus: 1]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "gw.yaml")
    issues = info.value.issues
    assert [(i.line, i.path) for i in issues] == [
        (1, "gateway.id"),
        (2, "uplink.insecure"),
        (4, "devices[0].name"),
        (4, "devices[0].port"),
        (4, "devices[0].timeout"),
        (6, "rules[0].when"),
        (6, "rules[0].actions[0].bogus"),
    ]
    assert not info.value.unreadable
    assert str(info.value) == format_issues(issues)


def test_anchors_and_merge_keys() -> None:
    text = HEAD + (
        "x-modbus: &modbus {host: 10.0.0.9, timeout: 250ms, poll_groups: {default: 2s}}\n"
    )
    with pytest.raises(ConfigError, match="unknown key 'x-modbus'"):
        load_config_text(text, "gw.yaml")
    text = HEAD + (
        "devices:\n"
        "  - &first {name: a, host: 10.0.0.9, timeout: 250ms}\n"
        "  - {<<: *first, name: b, port: 1502}\n"
    )
    a, b = load_config_text(text, "gw.yaml").devices
    assert (b.name, b.host, b.timeout, b.port) == ("b", "10.0.0.9", 0.25, 1502)
    assert a.port == 502


def test_yaml_syntax_error_is_an_issue_with_position() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("gateway:\n  id: gw1\n  - x\n", "gw.yaml")
    (issue,) = info.value.issues
    assert (issue.file, issue.line, issue.column, issue.path) == ("gw.yaml", 3, 3, "")
    assert issue.message.startswith("invalid YAML: ")
    assert info.value.unreadable


def test_unsafe_tags_are_rejected() -> None:
    with pytest.raises(ConfigError, match="cannot read value"):
        load_config_text("gateway: {id: !!python/name:os.system x}\n", "gw.yaml")


# --- option tables, durations ------------------------------------------------------------------

_DATACLASSES = {
    "gateway": GatewayConfig, "device": DeviceConfig, "point": PointConfig, "rule": RuleConfig,
    "alarm": AlarmAction, "write": WriteAction, "log": LogAction, "uplink": UplinkConfig,
    "event": EventAction, "set": SetAction, "virtual_point": VirtualPointConfig,
}  # fmt: skip


@pytest.mark.parametrize("section", sorted(_DATACLASSES))
def test_option_tables_match_dataclasses(section: str) -> None:
    """Every scalar option fills a field with the same default; nothing is missing."""
    fields = {f.name: f for f in dataclasses.fields(_DATACLASSES[section])}
    structural = {"devices", "rules", "uplink", "points", "actions", "source", "virtual_points",
                  "rule_files", "repeat_count", "repeat_within", "positions", "models",
                  "settings", "assets"}  # fmt: skip
    for opt in TABLES[section].options:
        if opt.key == "repeat":  # a nested section read into repeat_count / repeat_within
            continue
        assert opt.field in fields, f"{section}.{opt.key} has no dataclass field"
        f = fields[opt.field]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if opt.required:
            assert default is dataclasses.MISSING or section == "alarm", opt.key
        elif opt.kind not in ("path", "section_list", "section"):
            assert opt.default == default, f"{section}.{opt.key}: {opt.default!r} != {default!r}"
    covered = {opt.field for opt in TABLES[section].options if opt.key != "repeat"}
    assert set(fields) - covered <= structural | {"source"}
    assert all(opt.default is not REQUIRED or opt.required for opt in TABLES[section].options)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(2, 2.0), (0.5, 0.5), ("500ms", 0.5), ("2s", 2.0), ("1.5s", 1.5), ("5m", 300.0),
     ("1h", 3600.0), (".5s", 0.5), ("7ms", 0.007), (" 3s ", 3.0)],
)  # fmt: skip
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "5 s", "1d", "-1s", "s", "", True, None, math.inf, [1]])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="500ms, 2s, 1.5s, 5m, 1h"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.0, 0.05, 0.1, 0.5, 1.0, 1.5, 30.0, 60.0, 90.0, 3600.0])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --- generated schema and docs are committed and in sync ----------------------------------------


def test_committed_schema_is_generated() -> None:
    committed = config_docs.SCHEMA_PATH.read_text(encoding="utf-8")
    assert committed == config_docs.schema_text(), "run: python -m gateway.config.docs"
    assert json.loads(committed)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_committed_docs_are_generated() -> None:
    committed = config_docs.DOCS_PATH.read_text(encoding="utf-8")
    assert committed == config_docs.markdown_reference(), "run: python -m gateway.config.docs"
    for section in TABLES.values():
        for opt in section.options:
            assert f"| `{opt.key}` |" in committed


def test_schema_validates_demo_and_rejects_typos() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads(config_docs.SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    demo = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(demo)) == []
    demo["devices"][0]["points"][0]["type"] = "flaot32"
    demo["devices"][1]["pollgroups"] = {}
    assert len(list(validator.iter_errors(demo))) == 2
