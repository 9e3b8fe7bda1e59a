"""Rules inside the runtime: hot reload (all or nothing, state carried), alarm ack and
persistence across a restart, virtual points going to the point table and upstream."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import load_config
from gateway.core.model import SampleBatch
from gateway.core.runtime import Runtime
from gateway.uplink.queue import peek_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """
gateway: {{id: gw, data_dir: data, metrics_listen: null}}
uplink: {{insecure: true, endpoints: ["tcp://127.0.0.1:{port}"], queue: data/q.db}}
devices:
  - name: press1
    port: {port}
    reconnect_min: 10s
    reconnect_max: 10s
    points:
      - {{name: temp, address: 0, type: float32}}
      - {{name: flow, address: 2, type: float32}}
virtual_points:
  - {{name: temp_f, unit: degF}}
rule_files: [rules.yaml]
"""

RULES = """
- name: hot
  when: press1.temp > 80
  hysteresis: 5
  actions:
    - alarm: "hot {press1.temp}"
- name: to_f
  when: press1.temp > -1000
  clear: "false"
  actions:
    - set: {point: virtual.temp_f, value: "press1.temp * 1.8 + 32"}
- name: low_flow
  when: press1.flow < 1
  for: 10s
  actions:
    - alarm: "low flow"
"""


def setup(tmp_path: Path, rules: str = RULES) -> Path:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(CONFIG.format(port=free_port()))
    (tmp_path / "rules.yaml").write_text(rules)
    return cfg


def sample(rt: Runtime, point: str, ts: float, value: float) -> None:
    pid = np.array([rt.points.id_of(point)], np.uint32)
    rt.on_batch(SampleBatch.uniform(pid, ts, np.array([value])))


def with_runtime(cfg: Path, body: Callable[[Runtime], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        rt = Runtime(load_config(cfg), clock=lambda: 1000.0)
        await rt.start()
        try:
            return await body(rt)
        finally:
            await rt.stop()

    return asyncio.run(main())


def alarms(rt: Runtime) -> dict[str, Any]:
    return {a.rule: a for a in rt.rules.alarms()}


def test_reload_is_atomic_and_keeps_state_of_unchanged_rules(tmp_path: Path) -> None:
    cfg = setup(tmp_path)

    async def body(rt: Runtime) -> None:
        sample(rt, "press1.temp", 1.0, 90.0)
        sample(rt, "press1.flow", 1.0, 0.5)  # low_flow holding since 1.0
        assert alarms(rt)["hot"].active
        assert rt.poll_rule_files() is None  # nothing changed
        # a broken file: rejected with file:line:column, the old rules keep running
        (tmp_path / "rules.yaml").write_text(
            RULES + "- name: bad\n  when: press1.temp >\n  actions: [{log: x}]\n"
        )
        out = rt.reload_rules()
        assert not out["ok"] and "rules.yaml:18:22:" in out["error"], out["error"]
        assert rt.rules.rule_names == ["hot", "to_f", "low_flow"]
        # a good edit: `hot` unchanged (state kept, not raised again), low_flow's hold changed
        (tmp_path / "rules.yaml").write_text(
            RULES.replace("for: 10s", "for: 5s")
            + "- name: new\n  when: press1.flow > 100\n  actions: [{log: x}]\n"
        )
        out = rt.reload_rules()
        assert out["ok"], out
        assert set(out["carried"]) == {"hot", "to_f"} and set(out["replaced"]) == {
            "low_flow",
            "new",
        }
        assert alarms(rt)["hot"].active
        sample(rt, "press1.temp", 2.0, 78.0)  # inside the hysteresis band: still active
        assert alarms(rt)["hot"].active
        sample(rt, "press1.temp", 3.0, 70.0)
        assert not alarms(rt)["hot"].active
        kinds = [(e["kind"], e.get("rule"), e.get("state")) for e in rt.recent]
        assert (
            kinds.count(("alarm", "hot", "raised")) == 1
            and kinds.count(("alarm", "hot", "cleared")) == 1
        )
        assert ("rules", None, "reload_rejected") in kinds and ("rules", None, "reloaded") in kinds
        assert rt.metrics.get("rule_reloads_total", (("outcome", "applied"),)) == 1

    with_runtime(cfg, body)


def test_file_watch_picks_up_a_change(tmp_path: Path) -> None:
    cfg = setup(tmp_path)

    async def body(rt: Runtime) -> None:
        import os

        path = tmp_path / "rules.yaml"
        path.write_text(RULES.replace("> 80", "> 85"))
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        out = rt.poll_rule_files()
        assert out is not None and out["ok"] and "hot" in out["replaced"]

    with_runtime(cfg, body)


def test_alarm_ack_and_state_survive_a_restart(tmp_path: Path) -> None:
    cfg = setup(tmp_path)

    async def first(rt: Runtime) -> None:
        sample(rt, "press1.temp", 1.0, 90.0)
        assert not rt.ack_alarm("nope", "op")
        assert rt.ack_alarm("hot", "operator-7", 5.0)
        assert rt.ack_alarm("hot", "operator-7", 6.0)  # idempotent: no second event
        acks = [e for e in rt.recent if e["kind"] == "alarm" and e["state"] == "acked"]
        assert len(acks) == 1 and acks[0]["by"] == "operator-7" and acks[0]["active"] is True

    with_runtime(cfg, first)
    raw = peek_state(str(tmp_path / "data" / "q.db"), "alarms")  # committed with the events
    assert raw is not None and not (tmp_path / "data" / "alarms.json").exists()
    saved = json.loads(raw)
    hot = next(a for a in saved["alarms"] if a["rule"] == "hot")
    assert hot["active"] and hot["acked"] and hot["acked_by"] == "operator-7"

    async def second(rt: Runtime) -> None:
        state = alarms(rt)["hot"]
        assert state.active and state.acked and state.state == "active_acked"
        sample(rt, "press1.temp", 10.0, 95.0)  # still hot: not raised again
        sample(rt, "press1.temp", 11.0, 60.0)
        events = [(e["state"], e["rule"]) for e in rt.recent if e["kind"] == "alarm"]
        assert events == [("cleared", "hot")]
        assert alarms(rt)["hot"].state == "normal"

    with_runtime(cfg, second)


def test_virtual_point_set_goes_to_point_table_and_upstream(tmp_path: Path) -> None:
    cfg = setup(tmp_path)

    async def body(rt: Runtime) -> None:
        before = rt.uplink.stats()["submitted"]
        sample(rt, "press1.temp", 1.0, 100.0)
        pid = rt.points.id_of("virtual.temp_f")
        assert rt.points.last_value[pid] == 212.0 and len(rt.points.rings[pid]) == 1
        assert rt.uplink.stats()["submitted"] >= before + 2  # the sample and the virtual point
        assert rt.points.infos[pid].device == "virtual" and rt.points.infos[pid].unit == "[degF]"

    with_runtime(cfg, body)


def test_alarms_json_of_an_older_version_is_migrated_into_the_queue_once(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    legacy = tmp_path / "data" / "alarms.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps({"version": 1, "alarms": [
        {"rule": "hot", "active": True, "since": 5.0, "severity": "warning", "message": "hot 91",
         "acked": False, "acked_by": "", "acked_ts": None},
    ]}))  # fmt: skip

    async def first(rt: Runtime) -> None:
        assert alarms(rt)["hot"].state == "active_unacked"  # read from the old file
        sample(rt, "press1.temp", 10.0, 95.0)  # still hot: not raised again
        assert not [e for e in rt.recent if e["kind"] == "alarm"]
        await rt.uplink.flush()

    with_runtime(cfg, first)
    assert legacy.exists()  # the queue held no state before this start: kept until it does
    raw = peek_state(str(tmp_path / "data" / "q.db"), "alarms")
    assert raw is not None and json.loads(raw)["alarms"][0]["message"] == "hot 91"

    async def second(rt: Runtime) -> None:
        assert alarms(rt)["hot"].state == "active_unacked"  # now from the queue

    with_runtime(cfg, second)
    assert not legacy.exists() and legacy.with_name("alarms.json.migrated").exists()
