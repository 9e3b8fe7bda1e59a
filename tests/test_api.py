"""The REST API against a running gateway polling the simulated demo factory over real Modbus
TCP, with a real cloud receiver: what it shows is what the stages hold, and its actions take
the same paths as the cloud's commands (ack, write) and the file watch (reload)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from api_support import Gw, api_gateway, http
from openapi_spec_validator import validate
from uplink_support import wait_until

from gateway.api import routes as gw_routes
from gateway.api.routes import ROUTES

ALARM_RULE = {"name": "pressure_seen", "when": "press1.pressure > -1", "severity": "minor",
              "actions": [{"alarm": "press1 pressure {press1.pressure:.2f} bar"}]}  # fmt: skip


def strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def run(tmp_path: Path, body: Any, timeout: float = 90, **kw: Any) -> None:
    async def main() -> None:
        async with api_gateway(tmp_path, **kw) as gw:
            await body(gw)

    asyncio.run(asyncio.wait_for(main(), timeout))


async def until(gw: Gw, path: str, ok: Any, what: str, timeout: float = 10.0) -> Any:
    """GET ``path`` until ``ok(document)``; returns the document."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        doc = (await gw.get(path)).json()
        if ok(doc):
            return doc
        assert loop.time() < end, f"timed out after {timeout}s waiting for {what}: {doc}"
        await asyncio.sleep(0.1)


def test_reads_show_devices_points_rules_models_uplink_as_strict_json(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        devices = (await gw.get("/api/devices")).json()
        assert {d["name"] for d in devices} == {"press1", "pump1", "motor1"}
        press = next(d for d in devices if d["name"] == "press1")
        assert press["online"] and press["state"] == "online" and press["last_error"] is None
        assert 0 < press["round_trip_s"] < 1 and press["counters"]["responses"] > 0
        assert [b["table"] for b in press["blocks"]] and "press1.temp" in press["points"]
        assert (await gw.get("/api/devices/nope")).status == 404

        pt = await until(gw, "/api/points/press1.temp?samples=5",
                         lambda d: len(d["samples"]) == 5, "5 samples in press1.temp's ring")  # fmt: skip
        assert pt["unit"] == "degC" and pt["quality"] == "good" and not pt["writable"]
        ring = gw.rt.points.rings[gw.rt.points.id_of("press1.temp")]
        assert pt["samples"][-1][0] <= float(ring.last(1)[0][0])
        assert [s[0] for s in pt["samples"]] == sorted(s[0] for s in pt["samples"])
        every = (await gw.get("/api/points?device=pump1")).json()
        assert {p["name"] for p in every} == {"pump1.flow", "pump1.pressure", "pump1.setpoint"}
        unseen = (await gw.get("/api/points/motor_state.state")).json()  # a model output: NaN
        assert unseen["value"] is None and unseen["quality"] == "bad"
        assert (await gw.get("/api/points?samples=-1")).status == 400
        assert (await gw.get("/api/points?samples=4096")).status == 200  # 19 x 4096 < 100,000
        gw_routes.MAX_LIST_SAMPLES = 1000
        try:
            assert (await gw.get("/api/points?samples=100")).status == 400
        finally:
            gw_routes.MAX_LIST_SAMPLES = 100_000

        rules = {r["name"]: r for r in (await gw.get("/api/rules")).json()}
        assert rules["press1_overheat"]["state"] in ("idle", "holding", "active", "cooldown")
        assert rules["press1_overheat"]["enabled"] is True
        models = (await gw.get("/api/models")).json()
        assert models[0]["name"] == "bearing_ae" and "last_output" in models[0]
        up = await until(gw, "/api/uplink", lambda d: d["link"] == "connected", "the uplink")
        assert isinstance(up["queue_depth"], int) and isinstance(up["dropped"], dict)
        assert (await gw.get("/api/whoami")).json() == {"user": None, "role": "read",
                                                         "via": "loopback"}  # fmt: skip

    run(tmp_path, body)


def test_openapi_document_is_valid_and_lists_exactly_the_routes(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        doc = (await gw.get("/api/openapi.json")).json()
        validate(doc)
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        served = {(r.method, r.name) for r in ROUTES}
        assert documented == served
        for r in ROUTES:  # every state-changing route says it needs auth
            op = doc["paths"][r.name][r.method.lower()]
            assert ("security" in op) == r.operator, r.name

    run(tmp_path, body)


def test_ack_takes_the_cloud_path_with_the_user_and_reaches_upstream(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        await until(gw, "/api/alarms?state=active_unacked",
                    lambda d: [a["rule"] for a in d] == ["pressure_seen"], "the alarm")  # fmt: skip
        answer = await gw.post("/api/alarms/pressure_seen/ack", {})
        assert answer.status == 200, answer.body
        alarm = answer.json()["alarm"]
        assert alarm["state"] == "active_acked" and alarm["acked_by"] == "op"
        assert alarm["acked_ts"] is not None
        again = await gw.post("/api/alarms/pressure_seen/ack")  # idempotent, as the cloud's
        assert again.status == 200
        assert (await gw.post("/api/alarms/no_such_rule/ack")).status == 404
        filtered = (await gw.get("/api/alarms?state=active_acked&severity=minor")).json()
        assert [a["rule"] for a in filtered] == ["pressure_seen"]
        await wait_until(lambda: any(e.get("state") == "acked" and e.get("by") == "op"
                                     for e in gw.upstream("alarm")),
                         "the ack event in the cloud store", 10)  # fmt: skip

    run(tmp_path, body, extra_rules=[ALARM_RULE])


def test_write_lands_on_the_device_is_rate_limited_and_refused_for_read_only(
    tmp_path: Path,
) -> None:
    async def body(gw: Gw) -> None:
        answer = await gw.post("/api/points/pump1.setpoint/write", {"value": 12.5})
        assert answer.status == 200, answer.body
        assert gw.factory.values("pump1")["setpoint"] == 12.5
        fast = await gw.post("/api/points/pump1.setpoint/write", {"value": 13})
        assert fast.status == 429 and "rate limit" in fast.json()["error"]
        assert fast.headers["retry-after"] == "1"
        assert gw.factory.values("pump1")["setpoint"] == 12.5
        ro = await gw.post("/api/points/press1.temp/write", {"value": 1})
        assert ro.status == 403 and "not writable" in ro.json()["error"]
        assert (await gw.post("/api/points/nope.nope/write", {"value": 1})).status == 404
        for bad in ({"value": "x"}, {"value": 1, "extra": 2}, {}):
            assert (await gw.post("/api/points/pump1.flow/write", bad)).status in (400, 403)
        nan = await gw.post("/api/points/pump1.setpoint/write", raw=b'{"value": NaN}')
        assert nan.status == 400
        await wait_until(lambda: any(e.get("user") == "op" and e.get("point") == "pump1.setpoint"
                                     and e.get("outcome") == "ok" for e in gw.upstream("write")),
                         "the write event in the cloud store", 10)  # fmt: skip

    run(tmp_path, body)


def test_poll_once_returns_raw_registers_and_decoded_values(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        dev = (await gw.get("/api/devices/press1")).json()
        index = next(b["index"] for b in dev["blocks"] if "press1.pressure" in b["points"])
        answer = await gw.post("/api/devices/press1/poll", {"block": index})
        assert answer.status == 200, answer.body
        doc = answer.json()
        block = dev["blocks"][index]
        assert len(doc["registers"]) == block["count"]
        assert set(doc["values"]) == set(block["points"])
        # pressure: uint16 at address 2, scale 0.01: the raw register and the decoded value agree
        raw = doc["registers"][2 - block["address"]]
        assert abs(doc["values"]["press1.pressure"] - raw * 0.01) < 1e-9
        assert abs(doc["values"]["press1.pressure"] - gw.factory.values("press1")["pressure"]) < 5
        coil = next(b["index"] for b in dev["blocks"] if b["table"] == "coil")
        bits = (await gw.post("/api/devices/press1/poll", {"block": coil})).json()
        assert bits["values"]["press1.run"] in (0.0, 1.0) and bits["bits"]
        assert (await gw.post("/api/devices/press1/poll", {"block": 99})).status == 400
        await gw.factory.stop_device("pump1")
        await wait_until(lambda: not gw.rt.devices["pump1"].stats()["online"], "pump1 offline", 10)
        off = await gw.post("/api/devices/pump1/poll", {"block": 0})
        assert off.status == 502 and "offline" in off.json()["error"]
        pump = (await gw.get("/api/devices/pump1")).json()
        assert pump["online"] is False and pump["last_error"]

    run(tmp_path, body)


def test_rules_enable_disable_reload_and_config_validation(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        off = await gw.post("/api/rules/pressure_seen/disable", {})
        assert off.status == 200 and off.json()["rule"]["state"] == "disabled"
        assert "pressure_seen" not in {a["rule"] for a in (await gw.get("/api/alarms")).json()}
        on = await gw.post("/api/rules/pressure_seen/enable")
        assert on.status == 200 and on.json()["rule"]["enabled"] is True
        await until(gw, "/api/rules/pressure_seen", lambda r: r["state"] == "active",
                    "the re-enabled rule to fire")  # fmt: skip
        assert (await gw.post("/api/rules/nope/disable")).status == 404

        reload = await gw.post("/api/rules/reload")
        assert reload.status == 200 and reload.json()["ok"]
        text = gw.config.read_text()
        gw.config.write_text(text.replace("when: press1.temp > 80", "when: press1.temp >"))
        refused = await gw.post("/api/rules/reload")
        assert refused.status == 422 and refused.json()["error"]
        assert "press1_overheat" in {r["name"] for r in (await gw.get("/api/rules")).json()}
        gw.config.write_text(text)

        good = await gw.post("/api/config/validate", {"yaml": text})
        assert good.json() == {"ok": True, "issues": []}
        bad = (await gw.post("/api/config/validate", {"yaml": text + "\nbogus: 1\n"})).json()
        assert not bad["ok"] and any("bogus" in i for i in bad["issues"])

    run(tmp_path, body, extra_rules=[ALARM_RULE])


def test_event_stream_sends_points_alarms_devices_uplink_rules(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /api/events?interval_ms=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        seen: dict[str, list[Any]] = {}
        buf = b""
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        want = {"hello", "points", "alarms", "devices", "uplink", "rules", "event"}
        try:
            while not want <= set(seen):
                assert loop.time() < end, f"timed out waiting for events {want - set(seen)}"
                buf += await asyncio.wait_for(reader.read(65536), 10)
                *frames, buf = buf.split(b"\n\n")
                for frame in frames:
                    lines = dict(x.split(": ", 1) for x in frame.decode().split("\n")
                                 if ": " in x and not x.startswith(":"))  # fmt: skip
                    if "event" in lines:
                        seen.setdefault(lines["event"], []).append(strict(lines["data"]))
                if "points" in seen and "event" not in seen:
                    await gw.post("/api/alarms/pressure_seen/ack")  # makes an `event`
        finally:
            writer.close()
        assert seen["hello"][0]["gateway"] == "demo-gw"
        names = {p["name"] for doc in seen["points"] for p in doc["points"]}
        assert "press1.temp" in names
        assert set(seen["devices"][0]) == {"press1", "pump1", "motor1"}
        assert "pressure_seen" in seen["rules"][0]
        assert any(e["kind"] == "alarm" for e in seen["event"])
        head = (await http(gw.port, "GET", "/api/events?interval_ms=5")).status
        assert head == 400

    run(tmp_path, body, extra_rules=[ALARM_RULE])
