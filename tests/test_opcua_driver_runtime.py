"""An OPC UA device in the real Runtime, configured from YAML like `gateway run`: its values reach
the cloud receiver, a rule's `write` reaches the server, and its counters are on /metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from uplink_support import running_receiver

from gateway.cloud.store import SQLiteCloudStore
from gateway.config import load_config
from gateway.core import records
from gateway.core.runtime import Runtime
from tests.opcua_support import ServerProcess, wait_for

CONFIG = """
gateway: {{id: opc-gw, data_dir: {tmp}, metrics_listen: "127.0.0.1:0"}}
uplink: {{endpoints: ["{endpoint}"], insecure: true, queue: {tmp}/q.db}}
devices:
  - name: press2
    driver: opcua
    poll_groups: {{fast: 100ms}}
    opcua: {{endpoint: "{url}", insecure: true, queue_size: 20}}
    points:
      - {{name: c0, node: "ns=2;s=C0", poll: fast}}
      - {{name: c1, node: "ns=2;s=C1", poll: fast}}
      - {{name: setpoint, node: "ns=2;s=W.Int16", poll: fast, writable: true}}
rules:
  - name: follow
    when: "press2.c0 > 3"
    actions:
      - write: {{point: press2.setpoint, value: "-7"}}
"""


def test_opcua_device_in_the_runtime_to_the_cloud(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteCloudStore(str(tmp_path / "cloud.db"))
        with ServerProcess(n=2, period=0.1) as srv:
            async with running_receiver(store) as rx:
                cfg = tmp_path / "gw.yaml"
                cfg.write_text(CONFIG.format(tmp=tmp_path, endpoint=rx.endpoint, url=srv.url))
                runtime = Runtime(load_config(cfg))
                stop = asyncio.Event()
                run = asyncio.create_task(runtime.run(stop))
                pts = runtime.points
                try:
                    setpoint = pts.id_of("press2.setpoint")
                    await wait_for(lambda: pts.last_value[setpoint] == -7.0, "the rule's write "
                                   "echoed back by the server's subscription", 20.0)  # fmt: skip

                    def at_cloud() -> set[int]:
                        ids: set[int] = set()
                        for r in store.records("opc-gw", records.STREAM_TELEMETRY):
                            rec = records.decode(r.payload)
                            ids.update(i for i, x in zip(rec["id"], rec["x"], strict=True)
                                       if x == -7.0 or i != setpoint)  # fmt: skip
                        return ids

                    want = {pts.id_of("press2.c0"), pts.id_of("press2.c1"), setpoint}
                    await wait_for(lambda: want <= at_cloud(), "the values at the cloud", 20.0)
                    port = runtime._status_server.port  # type: ignore[union-attr]
                    url = f"http://127.0.0.1:{port}/metrics"
                    text = await asyncio.to_thread(
                        lambda: urllib.request.urlopen(url, timeout=5).read().decode()
                    )
                finally:
                    stop.set()
                    await asyncio.wait_for(run, 15)
        store.close()
        assert 'device_gaps_total{device="press2"} 0' in text
        assert 'device_writes_total{device="press2"} 1' in text
        assert 'device_online{device="press2"} 1' in text

    asyncio.run(asyncio.wait_for(main(), 90))
