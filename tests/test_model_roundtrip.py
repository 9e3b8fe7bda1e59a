"""The information model end to end: config -> birth record -> cloud store -> named samples,
export by asset path, AAS and identifier resolution, with units, semantic ids and identifiers
intact; and a model changed (hot reload) while a backlog of the old version is queued: every
record resolves with the version it was written under. Real simulated Modbus devices, a real
runtime and uplink, a real receiver and SQLite store, the CLI as subprocesses."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from uplink_support import bounded, running_receiver, wait_until

from gateway.cli import main
from gateway.cloud.models import from_store
from gateway.cloud.store import SQLiteCloudStore
from gateway.config import load_config
from gateway.core import records
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory, demo_factory

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = [sys.executable, "-m", "gateway"]
PRESS_ID = "https://id.gs1.org/8004/0950600013435PRESS1"
PUMP_ID = "88.100.1/pump-0007"


def config_text(tmp: Path, ports: dict[str, int], endpoint: str, line: str) -> str:
    return f"""\
gateway: {{id: gw1, data_dir: {tmp / "data"}, metrics_listen: null}}
devices:
  - name: press1
    port: {ports["press1"]}
    timeout: 500ms
    poll_groups: {{fast: 100ms}}
    points:
      - {{name: temp, address: 0, type: float32, unit: degC, poll: fast}}
      - {{name: vibration, address: 3, type: int16, scale: 0.001, unit: mm/s, poll: fast}}
  - name: pump1
    port: {ports["pump1"]}
    timeout: 500ms
    poll_groups: {{default: 200ms}}
    points:
      - {{name: flow, table: input, address: 0, type: float32, word_order: little, unit: m3/h}}
assets:
  strict: true
  types:
    - name: Press
      manufacturer: Demo Press Works
      model: HP-250
      points:
        - {{name: temperature, point: temp, quantity: temperature, semantic_id: "0173-1#02-AAV232#002", range: [0, 250]}}
        - {{name: vibration, point: vibration, quantity: vibration velocity}}
  tree:
    - id: factory
      level: site
      children:
        - id: {line}
          level: line
          children:
            - {{id: press1, type: Press, device: press1, serial: P-0001, identifier: "{PRESS_ID}"}}
            - id: pump1
              identifier: "{PUMP_ID}"
              manufacturer: Demo Pumps
              points: [{{name: flow, point: pump1.flow, quantity: volume flow, semantic_id: "https://example.com/sem/flow"}}]
uplink:
  endpoints: [{endpoint}]
  queue: {tmp / "q.db"}
  insecure: true
  batch_max_delay: 20ms
  ack_timeout: 500ms
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


@dataclasses.dataclass
class Backlog:
    db: Path
    old: str  # model version before the reload
    new: str  # after


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> Backlog:
    """A gateway whose telemetry queued up (no receiver) under one model version, then had its
    `assets:` changed by a hot reload (line1 -> line2), queued more, and was then delivered."""
    tmp_path = tmp_path_factory.mktemp("backlog")
    db = tmp_path / "cloud.db"
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    cfg_file = tmp_path / "gw.yaml"
    versions: dict[str, str] = {}

    async def main() -> None:
        specs = [dataclasses.replace(s, port=0) for s in demo_factory() if s.name != "motor1"]
        async with Factory(specs) as factory:
            cfg_file.write_text(config_text(tmp_path, factory.ports, endpoint, "line1"))
            runtime = Runtime(load_config(cfg_file))
            halt = asyncio.Event()
            task = asyncio.create_task(runtime.run(halt))

            def sent() -> int:
                streams = runtime.uplink.stats()["streams"]
                return int(streams.get("telemetry", {}).get("next_seq", 0))

            try:
                # no receiver yet: the telemetry of the first version queues up
                await wait_until(lambda: sent() > 20, "a backlog of version 1 telemetry", 15)
                versions["old"] = runtime.model_hash
                cfg_file.write_text(config_text(tmp_path, factory.ports, endpoint, "line2"))
                outcome = await bounded(runtime.reload_rules_async(), "the reload", 10)
                assert outcome["ok"], outcome
                versions["new"] = runtime.model_hash
                mark = sent()
                await wait_until(lambda: sent() > mark + 20, "telemetry of version 2", 15)
                async with running_receiver(SQLiteCloudStore(db), bind=endpoint):

                    def delivered() -> bool:
                        st = runtime.uplink.stats()["streams"]
                        return all(
                            st.get(s, {}).get("acked_hw", 0) >= 1 for s in ("meta", "telemetry")
                        ) and (st["telemetry"]["acked_hw"] > mark + 20)

                    await wait_until(delivered, "the backlog delivered and acknowledged", 20)
                    halt.set()
                    await bounded(task, "the runtime to stop", 15)
            finally:
                halt.set()
                await asyncio.wait_for(task, 15)

    asyncio.run(asyncio.wait_for(main(), 90))
    return Backlog(db, versions["old"], versions["new"])


def test_backlog_across_a_model_change_resolves_with_its_own_version(backlog: Backlog) -> None:
    assert backlog.new != backlog.old
    versions = {"old": backlog.old, "new": backlog.new}
    with SQLiteCloudStore(backlog.db) as store:
        models = from_store(store)
        assert models.versions("gw1") == [backlog.old, backlog.new]
        seen: dict[str, set[str]] = {"old": set(), "new": set()}
        for rec in store.records("gw1", records.STREAM_TELEMETRY, limit=100_000):
            tel = records.decode(rec.payload)
            which = "old" if tel["model"] == backlog.old else "new"
            assert tel["model"] == versions[which]
            for s in models.named("gw1", tel):
                assert s["point"] in ("press1.temp", "press1.vibration", "pump1.flow")
                if s["point"] == "press1.temp":
                    assert s["unit"] == "Cel" and s["asset"] == "press1"
                    seen[which].add(s["path"])
        assert seen == {
            "old": {"factory/line1/press1.temperature"},
            "new": {"factory/line2/press1.temperature"},
        }


def test_export_by_asset_path(backlog: Backlog, capsys: pytest.CaptureFixture[str]) -> None:
    """Each version's samples under the path it gave them."""
    db = str(backlog.db)
    old = cli("export", "--db", db, "--asset", "line1/press1", "--csv")
    assert old.returncode == 0, old.stderr
    assert main(["export", "--db", db, "--asset", "line2/press1"]) == 0
    new_rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    old_rows = list(csv.DictReader(io.StringIO(old.stdout)))
    assert {r["point"] for r in old_rows} == {"press1.temp", "press1.vibration"}
    assert old_rows and new_rows
    assert max(float(r["ts"]) for r in old_rows) <= min(float(r["ts"]) for r in new_rows)
    assert main(["export", "--db", db, "--asset", "line9/press1"]) == 2
    assert "factory/line2/press1" in capsys.readouterr().err


def test_aas_of_the_press_reads_back_with_units_and_ids(
    backlog: Backlog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cloud import aas

    db = str(backlog.db)
    out = tmp_path / "press1.aasx"
    made = cli("aas", "--db", db, "--asset", "line2/press1", "-o", str(out))
    assert made.returncode == 0, made.stderr
    info = aas.summary(aas.read(out))
    (shell,) = info["shells"].values()
    assert shell["global_asset_id"] == PRESS_ID
    ops = info["submodels"]["OperationalData"]["properties"]
    assert ops["temperature"]["unit"] == "Cel"
    assert ops["temperature"]["semantic_id"] == "0173-1#02-AAV232#002"
    assert isinstance(ops["temperature"]["value"], float)
    assert ops["vibration"]["unit"] == "mm/s"
    plate = info["submodels"]["Nameplate"]["properties"]
    assert plate["SerialNumber"]["value"] == "P-0001"
    assert plate["ManufacturerName"]["value"] == {"en": "Demo Press Works"}
    as_json = tmp_path / "pump1.json"
    assert main(["aas", "--db", db, "--asset", PUMP_ID, "-o", str(as_json)]) == 0
    shells = json.loads(as_json.read_text())["assetAdministrationShells"]
    assert shells[0]["assetInformation"]["globalAssetId"] == PUMP_ID
    assert main(["aas", "--read", str(as_json)]) == 0
    broken = tmp_path / "broken.json"
    broken.write_text(as_json.read_text().replace('"modelType": "Property"', '"modelType": "X"'))
    capsys.readouterr()
    assert main(["aas", "--read", str(broken)]) == 2
    assert "not a valid AAS file" in capsys.readouterr().err


def test_resolve_an_identifier_with_the_local_registry(
    backlog: Backlog, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(backlog.db)
    res = cli("resolve", PRESS_ID, "--db", db)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert found["asset"]["path"] == "factory/line2/press1" and found["scheme"] == "gs1"
    assert found["model"] == backlog.new and found["resolver"] == "local"
    assert found["latest"]["temperature"]["unit"] == "Cel"
    assert main(["resolve", "https://id.gs1.org/01/09506000134353", "--db", db]) == 2
    assert "wrong check digit" in capsys.readouterr().err
    assert main(["resolve", "urn:oid:1.3.6.1.4.1.32473.9", "--db", db]) == 1
    assert "not known" in capsys.readouterr().err


def test_subscribe_prints_named_samples_with_units_by_default(tmp_path: Path) -> None:
    lines: list[dict[str, Any]] = []

    async def main() -> None:
        specs = [dataclasses.replace(s, port=0) for s in demo_factory() if s.name != "motor1"]
        store = SQLiteCloudStore(tmp_path / "cloud.db")
        async with Factory(specs) as factory, running_receiver(store) as rx:
            assert rx.endpoint and rx.pub_endpoint
            sub = await asyncio.create_subprocess_exec(
                *GATEWAY, "subscribe", "--connect", rx.pub_endpoint, "--db",
                str(tmp_path / "cloud.db"), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=ROOT,
            )  # fmt: skip
            cfg_file = tmp_path / "gw.yaml"
            cfg_file.write_text(config_text(tmp_path, factory.ports, rx.endpoint, "line1"))
            halt = asyncio.Event()
            task = asyncio.create_task(Runtime(load_config(cfg_file)).run(halt))

            async def until_flow() -> None:
                assert sub.stdout is not None
                while True:
                    raw = await sub.stdout.readline()
                    assert raw, "subscribe closed its output"
                    lines.append(json.loads(raw))
                    if lines[-1].get("point") == "pump1.flow" and lines[-1]["unit"]:
                        return

            try:
                await bounded(until_flow(), "a named pump1.flow sample", 30)
            finally:
                halt.set()
                await bounded(task, "the runtime to stop", 15)
                sub.terminate()
                await bounded(sub.wait(), "subscribe to stop", 10)

    asyncio.run(asyncio.wait_for(main(), 60))
    flow = lines[-1]
    assert flow["path"] == "factory/line1/pump1.flow" and flow["asset"] == "pump1"
    assert flow["unit"] == "m3/h" and flow["quality"] in ("good", "uncertain", "bad")
    assert flow["gateway"] == "gw1" and flow["stream"] == "telemetry"
    assert set(flow) >= {"asset", "path", "point", "unit", "ts", "value", "quality", "model"}


def test_damaged_or_unknown_models_name_nothing_and_break_nothing() -> None:
    """A peer controls its meta records: bad ones are skipped, unknown ids shown as #id."""
    from gateway.model.versions import ModelVersions

    mv = ModelVersions()
    assert mv.learn("g", {"kind": "point_model", "model": "a", "points": "nope"}) is None
    assert mv.learn("g", {"kind": "events", "model": "b", "points": []}) is None
    assert mv.learn_payloads("g", [b"\xc1", records.encode_event("x", 1.0)]) == 0
    mv.learn("g", {"kind": "point_model", "model": "m", "points": [7, {"name": "d.p"}]})
    tel = {"model": "m", "id": [0, 1, 5], "ts": [1.0] * 3, "x": [1.0, 2.0, None], "q": [0, 1, 9]}
    out = mv.named("g", tel)
    assert [s["point"] for s in out] == ["#0", "d.p", "#5"]
    assert [s["quality"] for s in out] == ["good", "uncertain", 9]
    assert all(s["asset"] is None and s["path"] is None for s in out)
    assert [s["point"] for s in mv.named("other", tel)] == ["#0", "#1", "#5"]
