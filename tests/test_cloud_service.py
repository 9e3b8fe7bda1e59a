"""The receiver as a service: /metrics (parsed with prometheus_client's parser), /health and the
per-gateway /status JSON, on a real `gateway cloud` with a real gateway, and in-process for the
states a subprocess cannot be steered into (a lost store, an announced backlog)."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cloud_cli_support import cloud, gateway, gateway_config, short_dir, wait_online
from prometheus_client.parser import text_string_to_metric_families
from uplink_support import RawPeer, run, running_receiver, wait_until

from gateway.cloud.service import ReceiverService
from gateway.cloud.store import SQLiteCloudStore
from gateway.core.httpd import StatusServer
from gateway.uplink import wire


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_health_and_status_of_a_receiver_with_a_gateway(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")  # the demo config's model
    with short_dir() as d, cloud(d, "rx1") as rx:
        with gateway(gateway_config(tmp_path, [rx.endpoint])):
            wait_online(d)
            code, body = _get(rx.status_port, "/health")
            assert code == 200 and json.loads(body) == {
                "receiver": "rx1", "ok": True, "problems": [],
            }  # fmt: skip
            code, body = _get(rx.status_port, "/status")
            assert code == 200
            st = json.loads(body)
            assert st["receiver"] == "rx1" and st["endpoint"] == rx.endpoint and st["healthy"]
            gw = st["gateways"]["demo-gw"]
            assert gw["connected"] is True and gw["receiver"] == "rx1"
            assert gw["seen_ago_s"] < 30 and gw["last_seen"] > 0
            assert isinstance(gw["backlog"], int) and gw["backlog"] >= 0
            assert isinstance(gw["backlog_announced"], dict), gw  # the HELLO announced it
            assert gw["lag_s"] >= 0 and "streams" in gw
            code, text = _get(rx.status_port, "/metrics")
            assert code == 200
        fams = _families(text)
        # Counters: the parser strips _total from the family name and keeps it on the sample.
        records = fams["gateway_cloud_records"]
        assert records.type == "counter"
        assert records.samples[0].name == "gateway_cloud_records_total"
        assert records.samples[0].value >= 1  # the gateway's meta record at least
        commit = fams["gateway_cloud_commit_seconds"]
        assert commit.type == "histogram"
        buckets = [s for s in commit.samples if s.name.endswith("_bucket")]
        assert buckets[-1].labels["le"] == "+Inf"
        count = next(s.value for s in commit.samples if s.name.endswith("_count"))
        assert buckets[-1].value == count >= 1
        assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative
        assert fams["gateway_cloud_gateways_connected"].samples[0].value == 1
        rejected = {s.labels["reason"] for s in fams["gateway_cloud_rejected"].samples}
        assert {"bad_messages", "auth_rejected", "limit_refused"} <= rejected
        cmds = {s.labels["outcome"]: s.value for s in fams["gateway_cloud_commands"].samples}
        assert cmds.get("ok", 0) >= 1  # wait_online's ping
        for name in ("process_cpu_seconds", "process_resident_memory_bytes",
                     "process_start_time_seconds", "process_open_fds"):  # fmt: skip
            assert name in fams and fams[name].samples[0].value > 0, name
        info = fams["gateway_cloud_build_info"].samples[0]
        assert info.value == 1 and info.labels["version"]
        assert all(f.documentation for f in fams.values()), "every family has # HELP"


def test_status_endpoint_refuses_bad_requests(tmp_path: Path) -> None:
    with short_dir() as d, cloud(d, "rx1") as rx:
        assert _get(rx.status_port, "/status", method="POST")[0] == 405
        assert _get(rx.status_port, "/nothing")[0] == 404
        assert _get(rx.status_port, "/status/../../etc/passwd")[0] == 404
        code, body = _get(rx.status_port, "/status")
        assert code == 200 and json.loads(body)["gateways"] == {}


def test_status_listen_bad_address_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "gateway", "cloud", "--insecure", "--status-listen", "localhost",
         "--db", str(tmp_path / "c.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2 and "is not HOST:PORT" in res.stderr, res


def test_backlog_announced_at_hello_and_lag(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteCloudStore(tmp_path / "c.db")
        async with running_receiver(store) as rx:
            assert rx.endpoint is not None
            svc = ReceiverService(rx, "rx1")
            peer = RawPeer(rx.endpoint)
            try:
                welcome = await peer.call(wire.Hello("gw1", {"s": 7}, {"s": 100}))
                assert isinstance(welcome, wire.Welcome)
                ack = await peer.call(wire.Data.build("s", 7, 1, [b"r%d" % i for i in range(30)]))
                assert isinstance(ack, wire.Ack) and ack.hw == 30
                gw = svc.status()["gateways"]["gw1"]
                assert gw["backlog_announced"] == {"s": 100} and gw["backlog"] == 70
                assert gw["lag_s"] >= 0 and gw["last_commit"] is not None
                ack = await peer.call(wire.Data.build("s", 7, 31, [b"x"] * 70))
                assert isinstance(ack, wire.Ack) and ack.hw == 100
                gw = svc.status()["gateways"]["gw1"]
                assert gw["backlog"] == 0 and gw["lag_s"] == 0.0
            finally:
                peer.close()

    run(main())


def test_hello_last_is_checked_on_the_wire() -> None:
    msg = wire.decode(wire.encode(wire.Hello("g", {"a": 1}, {"a": 5})))
    assert isinstance(msg, wire.Hello) and msg.last == {"a": 5}
    assert wire.decode(wire.encode(wire.Hello("g", {"a": 1}))) == wire.Hello("g", {"a": 1})
    empty = wire.decode(wire.encode(wire.Hello("g", {}, {})))
    assert isinstance(empty, wire.Hello) and empty.last == {}  # announced: nothing queued
    import msgpack

    for last in ({"b": 1}, {"a": -1}, [1], {"a": "x"}):
        body = msgpack.packb({"v": wire.PROTOCOL_VERSION, "gateway": "g", "streams": {"a": 1},
                              "last": last})  # fmt: skip
        with pytest.raises(wire.WireError):
            wire.decode([b"HELLO", body])


def test_health_is_503_while_the_store_is_lost(tmp_path: Path) -> None:
    """The store's directory vanishes under the receiver: nothing can be acknowledged, and
    /health says so (503 with the reason) until the store can be opened again."""

    async def main() -> None:
        folder = tmp_path / "store"
        store = SQLiteCloudStore(folder / "c.db")
        async with running_receiver(store) as rx:
            assert rx.endpoint is not None
            svc = ReceiverService(rx, "rx1")
            http = StatusServer("127.0.0.1:0", svc.metrics, svc.status, svc.health)
            await http.start()
            try:
                assert svc.health()[0]
                peer = RawPeer(rx.endpoint)
                assert isinstance(await peer.call(wire.Hello("gw1", {"s": 1})), wire.Welcome)
                shutil.rmtree(folder)
                folder.write_text("not a directory")  # the store cannot be reopened here
                await peer.sock.send_multipart(wire.encode(wire.Data.build("s", 1, 1, [b"a"])))
                await wait_until(lambda: not svc.health()[0], "health to turn bad")
                code, body = await _aget(http.port, "/health")
                assert code == 503 and "store unavailable" in body, body
                metrics = _families((await _aget(http.port, "/metrics"))[1])
                assert metrics["gateway_cloud_healthy"].samples[0].value == 0
                assert metrics["gateway_cloud_store_replaced"].samples[0].value == 1
                folder.unlink()  # the operator fixes it; the next message reopens the store
                for _ in range(50):  # it retries the store at most once a second, per message
                    await peer.sock.send_multipart(wire.encode(wire.Data.build("s", 1, 1, [b"a"])))
                    if svc.health()[0]:
                        break
                    await asyncio.sleep(0.2)
                assert svc.health()[0], "health did not recover once the store could be opened"
                peer.close()
            finally:
                await http.stop()

    run(main())


async def _aget(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, port, path)
