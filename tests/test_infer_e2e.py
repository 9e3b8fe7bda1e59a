"""End to end with the real interpreter: simulated bearing fault -> score rises -> rule -> cloud.

pymodbus devices, the Runtime with examples/demo.yaml (its bearing_ae model and the
motor1_bearing_anomaly rule), and the cloud receiver run in one loop. The shared clock runs 10x
faster than wall time and motor1 is polled every 10 ms, so the model still sees 10 Hz of machine
time and the fault episode plays out in a few seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
from pathlib import Path

from uplink_support import modbus_demo, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.core.records import ModelDecoder, decode
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory, MotorModel, demo_factory

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"
SPEED = 10.0
FAULT_AT = 30.0  # machine seconds after the motor's first update
THRESHOLD = json.loads((DEMO.parent / "models" / "bearing_ae.ref.json").read_text())["threshold"]


def test_bearing_fault_raises_the_model_alarm_in_the_cloud(tmp_path: Path) -> None:
    t0, m0 = time.time(), time.monotonic()

    def clock() -> float:
        return t0 + (time.monotonic() - m0) * SPEED

    async def main() -> None:
        motor = functools.partial(
            MotorModel, excursion_at=1e9, bearing_fault_at=FAULT_AT, bearing_fault_len=1e9
        )
        specs = [
            dataclasses.replace(s, port=0, model=motor if s.name == "motor1" else s.model)
            for s in demo_factory()
        ]
        store = SQLiteCloudStore(str(tmp_path / "cloud.db"))
        async with Factory(specs, clock) as factory, running_receiver(store) as receiver:
            base = modbus_demo()
            devices = []
            for d in base.devices:
                d = dataclasses.replace(d, port=factory.ports[d.name])
                if d.name == "motor1":
                    d = dataclasses.replace(d, poll_groups={"default": 0.1 / SPEED})
                devices.append(d)
            config = dataclasses.replace(
                base,
                data_dir=str(tmp_path),  # alarm state of other runs must not leak in
                metrics_listen=None,
                devices=tuple(devices),
                uplink=dataclasses.replace(
                    base.uplink,
                    endpoints=(receiver.endpoint,),
                    queue=str(tmp_path / "q.db"),
                    insecure=True,  # the receiver here runs without keys; security has its tests
                ),
            )
            runtime = Runtime(config, clock=clock)
            assert runtime.models is not None
            stop = asyncio.Event()
            run = asyncio.create_task(runtime.run(stop))

            def events() -> list[dict]:
                return [decode(r.payload) for r in store.records("demo-gw", "events")]

            def bearing_alarm() -> bool:
                factory.tick()
                return any(
                    e["kind"] == "alarm"
                    and e["rule"] == "motor1_bearing_anomaly"
                    and e["state"] == "raised"
                    for e in events()
                )

            try:
                await wait_until(bearing_alarm, "motor1_bearing_anomaly to reach the cloud", 40)
            finally:
                stop.set()
                await asyncio.wait_for(run, 15)
            stats = runtime.models.stats()
            alarm = next(
                e
                for e in events()
                if e.get("rule") == "motor1_bearing_anomaly" and e.get("state") == "raised"
            )
            models = ModelDecoder()
            for r in store.records("demo-gw", "meta"):
                models.add_model(decode(r.payload))
            scores = []
            for r in store.records("demo-gw", "telemetry", limit=100_000):
                scores += [(ts, x) for name, ts, x, _ in models.samples(decode(r.payload))
                           if name == "bearing_ae.score"]  # fmt: skip
        assert stats["bearing_ae"]["state"] == "running", stats
        assert stats["bearing_ae"]["inferred"] > 0 and stats["bearing_ae"]["errors"] == 0
        fault_ts = t0 + FAULT_AT  # the motor's clock starts within a poll of t0
        before = [x for ts, x in scores if ts < fault_ts]
        assert before, "no score computed before the fault"
        assert max(before) < THRESHOLD, f"false alarm before the fault: {max(before)}"
        assert alarm["ts"] > fault_ts
        assert max(x for _, x in scores) > THRESHOLD
        store.close()

    asyncio.run(asyncio.wait_for(main(), 90))
