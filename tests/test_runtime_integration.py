"""The whole data path in one event loop: pymodbus devices -> Runtime -> CloudReceiver.

The simulated physics and the gateway share a clock running 10x faster than wall time, so the demo's
overheat episode (about 30 s of machine time) plays out in a few seconds of real polling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

from uplink_support import modbus_demo, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.core.records import ModelDecoder, decode
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory, demo_factory

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"
SPEED = 10.0


def test_demo_episode_flows_from_devices_through_rules_to_the_cloud(tmp_path: Path) -> None:
    t0, m0 = time.time(), time.monotonic()

    def clock() -> float:
        return t0 + (time.monotonic() - m0) * SPEED

    async def main() -> None:
        specs = [dataclasses.replace(s, port=0) for s in demo_factory()]
        store = SQLiteCloudStore(str(tmp_path / "cloud.db"))
        async with Factory(specs, clock) as factory, running_receiver(store) as receiver:
            base = modbus_demo()
            config = dataclasses.replace(
                base,
                metrics_listen="127.0.0.1:0",
                data_dir=str(tmp_path),
                devices=tuple(
                    dataclasses.replace(d, port=factory.ports[d.name]) for d in base.devices
                ),
                uplink=dataclasses.replace(
                    base.uplink,
                    endpoints=(receiver.endpoint,),
                    queue=str(tmp_path / "q.db"),
                    insecure=True,
                ),
            )
            runtime = Runtime(config, clock=clock)
            stop = asyncio.Event()
            run = asyncio.create_task(runtime.run(stop))
            coil_seen: list[float] = []

            def events() -> list[dict]:
                return [decode(r.payload) for r in store.records("demo-gw", "events")]

            def overheat_cleared() -> bool:
                factory.tick()
                coil_seen.append(factory.values("press1")["run"])
                states = [
                    e["state"]
                    for e in events()
                    if e["kind"] == "alarm" and e["rule"] == "press1_overheat"
                ]
                return states[:2] == ["raised", "cleared"]

            try:
                await wait_until(overheat_cleared, "press1_overheat to raise and clear", 30)
            finally:
                stop.set()
                await asyncio.wait_for(run, 15)

            writes = [e for e in events() if e["kind"] == "write"]
            assert writes[0]["point"] == "press1.run" and writes[0]["outcome"] == "done"
            assert 0.0 in coil_seen, "the rule's write never reached the simulated press"

            models = ModelDecoder()
            for r in store.records("demo-gw", "meta"):
                models.add_model(decode(r.payload))
            seqs, temps = [], []
            for r in store.records("demo-gw", "telemetry", limit=100_000):
                seqs.append(r.seq)
                temps += [
                    x
                    for name, _, x, _ in models.samples(decode(r.payload))
                    if name == "press1.temp"
                ]
            assert seqs == list(range(1, len(seqs) + 1))
            assert max(temps) > 80.0
            status = json.loads(json.dumps(runtime.status()))  # what /status serves
            assert {p["name"] for p in status["points"]} >= {"press1.temp", "pump1.flow"}
            assert status["uplink"]["link"] in ("connected", "down", "connecting")
        store.close()

    asyncio.run(asyncio.wait_for(main(), 60))
