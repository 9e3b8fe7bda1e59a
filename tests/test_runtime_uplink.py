"""The runtime's side of the uplink: cloud commands reach a (simulated) device, and a corrupt
queue file is quarantined with an alarm upstream. Real pymodbus devices, real ZeroMQ, SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path

from uplink_support import DEMO, bounded, demo_config, run, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.core.records import decode
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory, demo_factory


def test_cloud_write_command_reaches_the_device_and_corrupt_queue_raises_an_alarm(
    tmp_path: Path,
) -> None:
    queue = tmp_path / "q.db"
    queue.write_bytes(b"this is not an SQLite file" * 100)

    async def main() -> None:
        specs = [dataclasses.replace(s, port=0) for s in demo_factory()]
        store = SQLiteCloudStore(str(tmp_path / "cloud.db"))
        async with Factory(specs) as factory, running_receiver(store) as rx:
            config = demo_config(tmp_path, factory.ports, rx.endpoint, queue)
            runtime = Runtime(config)
            stop = asyncio.Event()
            task = asyncio.create_task(runtime.run(stop))
            try:
                res = await bounded(
                    rx.command("demo-gw", "write", {"point": "pump1.setpoint", "value": 17.5}),
                    "the write command's result",
                    timeout=10,
                )
                assert res.outcome == "ok", res
                assert factory.values("pump1")["setpoint"] == 17.5
                bad = await bounded(
                    rx.command("demo-gw", "write", {"point": "pump1.flow", "value": 1}), "refusal"
                )
                assert bad.outcome == "failed" and "writable" in bad.detail
                unknown = await bounded(rx.command("demo-gw", "write", {"point": "x.y"}), "unknown")
                assert unknown.outcome == "failed"
                # The config on disk names other ports than this test's devices: refused whole.
                reload = await bounded(rx.command("demo-gw", "reload_rules"), "reload")
                assert reload.outcome == "failed" and "restart" in reload.detail, reload
                ack = await bounded(rx.command("demo-gw", "ack_alarm", {"rule": "nope"}), "ack")
                assert ack.outcome == "failed" and "nope" in ack.detail
                model = await bounded(
                    rx.command(
                        "demo-gw", "update_model",
                        {"name": "bearing_ae", "sha256": "0" * 64, "data": b"not a model"},
                    ),
                    "update_model",
                )  # fmt: skip
                assert model.outcome == "failed" and "sha256" in model.detail
                blob = (DEMO.parent / "models" / "bearing_ae.tflite").read_bytes()
                model = await bounded(
                    rx.command(
                        "demo-gw", "update_model",
                        {"name": "bearing_ae", "sha256": hashlib.sha256(blob).hexdigest(),
                         "data": blob},
                    ),
                    "update_model with a good file",
                    timeout=30,
                )  # fmt: skip
                assert model.outcome == "ok", model
                assert list((tmp_path / "models").glob("bearing_ae-*.tflite"))
                unknown_kind = await bounded(rx.command("demo-gw", "reboot"), "unknown command")
                assert unknown_kind.outcome == "unsupported"

                def alarms() -> list[dict[str, object]]:
                    evs = [decode(r.payload) for r in store.records("demo-gw", "events")]
                    return [e for e in evs if e.get("rule") == "uplink_queue_quarantined"]

                await wait_until(lambda: bool(alarms()), "the quarantine alarm upstream", 10)
                writes = [decode(r.payload) for r in store.records("demo-gw", "events")]
                assert any(e.get("rule") == "cloud" and e.get("outcome") == "ok" for e in writes)
            finally:
                stop.set()
                await bounded(task, "runtime stop", timeout=15)
        quarantined = list(tmp_path.glob("q.db.corrupt-*"))
        assert len(quarantined) == 1 and quarantined[0].read_bytes().startswith(b"this is not")

    run(main(), timeout=40)
