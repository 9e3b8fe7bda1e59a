"""OPC UA end to end: the gateway's driver vs asyncua's plain client, on the same server.

A server (asyncua's, or o6's C server, which serves 100,000 changes/s where asyncua's stops
near 18,000) changes N Double variables every 100 ms. Against it, in a process of its own each:
asyncua's plain client subscription with a no-op handler (bench_opcua_stacks.py), and the
gateway's OPC UA device (``OpcuaDevice``: our publish loop with PublishRequests in flight and
the compiled decoder, every change delivered as a SampleBatch to a counting callback). Printed:
changes/s received, client CPU % of one core, RSS, and the ratio of changes per CPU second.

``--quick``: N=1000 only. Defaults: N=1000 and 10,000 (10k and 100k changes/s offered).
o6 runs only in this benchmark's child processes (its PyPI build ends a process after ten
minutes), never in a test process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_opcua_stacks as stacks  # noqa: E402

stacks.SCRIPT = __file__


async def gateway_client(n: int, port: int, ns: int) -> None:
    from gateway.config import DeviceConfig, OpcuaConfig, PointConfig
    from gateway.drivers.opcua.device import OpcuaDevice

    count = 0

    def on_batch(batch: Any) -> None:
        nonlocal count
        count += len(batch)

    cfg = DeviceConfig(
        name="bench", driver="opcua", timeout=60.0, poll_groups={"default": stacks.PERIOD},
        points=tuple(PointConfig(name=f"v{i}", node=f"ns={ns};s=v{i}") for i in range(n)),
        opcua=OpcuaConfig(endpoint=f"opc.tcp://127.0.0.1:{port}/", insecure=True, queue_size=1,
                          keepalive_count=100, publish_requests=4),
    )  # fmt: skip
    dev = OpcuaDevice(cfg, {f"bench.v{i}": i for i in range(n)}, on_batch, lambda e: None)
    await dev.start()
    while not dev.stats()["publish_responses"]:
        await asyncio.sleep(0.05)
    stacks.say("SUBSCRIBED")
    while True:
        await asyncio.sleep(0.5)
        stacks.say("COUNT", count)


FULL_CONFIG = """
gateway: {{id: bench-gw, data_dir: {tmp}, metrics_listen: null, ring_capacity: 8}}
uplink: {{endpoints: ["tcp://127.0.0.1:{cloud}"], insecure: true, queue: {tmp}/q.db}}
devices:
  - name: bench
    driver: opcua
    timeout: 60s
    poll_groups: {{default: {period}}}
    opcua: {{endpoint: "opc.tcp://127.0.0.1:{port}/", insecure: true, queue_size: 1,
             keepalive_count: 100, publish_requests: 4}}
    points:
{points}
"""


async def full_client(n: int, port: int, ns: int) -> None:
    """The whole gateway (Runtime: driver, ring ingest, rules, durable queue, uplink) in this
    process, a cloud receiver (`gateway cloud`) in another; COUNT is samples ingested, UPLINK
    the records the cloud acknowledged."""
    import tempfile

    from gateway.config import load_config
    from gateway.core.runtime import Runtime

    tmp = tempfile.mkdtemp(prefix="bench-opcua-")
    cloud = stacks.free_port()
    rx = subprocess.Popen(
        [sys.executable, "-m", "gateway", "cloud", "--insecure", "--bind", f"tcp://127.0.0.1:{cloud}",
         "--pub", f"tcp://127.0.0.1:{stacks.free_port()}", "--db", f"{tmp}/cloud.db",
         "--status-interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    points = "\n".join(f'      - {{name: v{i}, node: "ns={ns};s=v{i}"}}' for i in range(n))
    cfg = Path(tmp) / "gw.yaml"
    cfg.write_text(FULL_CONFIG.format(tmp=tmp, cloud=cloud, port=port, period=stacks.PERIOD,
                                      points=points))  # fmt: skip
    runtime = Runtime(load_config(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        while not runtime.metrics.get("samples_total"):
            await asyncio.sleep(0.05)
        stacks.say("SUBSCRIBED")
        while True:
            await asyncio.sleep(0.5)
            up = runtime.uplink.stats()
            stacks.say("COUNT", runtime.metrics.get("samples_total"))
            stacks.say("UPLINK", up.get("acks", 0), up.get("in_flight", 0))
    finally:
        stop.set()
        await task
        rx.terminate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N=1000 only, short window")
    ap.add_argument("--sizes", default="1000,10000", help="variables, comma-separated")
    ap.add_argument("--server", default="o6", choices=["o6", "asyncua"], help="server stack")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured")
    ap.add_argument("--clients", default="asyncua,gateway,full",
                    help="asyncua (plain client), gateway (the driver), full (whole gateway to "
                    "a cloud receiver)")  # fmt: skip
    stacks.add_role_arguments(ap)
    args = ap.parse_args()
    if args.role == "server":
        if args.stack == "asyncua":
            asyncio.run(stacks.asyncua_server(args.n, args.port))
        else:
            stacks.o6_server(args.n, args.port)
        return
    if args.role == "client":
        clients = {"gateway": gateway_client, "full": full_client}
        client = clients.get(args.stack or "", stacks.asyncua_client)
        asyncio.run(client(args.n, args.port, args.ns))
        return
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    window, warmup = (3.0, 2.0) if args.quick else (args.window, 5.0)
    stacks.say(f"OPC UA end to end on loopback, {os.cpu_count()} CPUs, {args.server} server; N "
               f"Doubles changed every {stacks.PERIOD * 1000:.0f} ms; {window:.0f} s window")  # fmt: skip
    stacks.say(f"  {'client':8s} {'N':>6s} {'offered/s':>10s} {'served/s':>10s} "
               f"{'received/s':>11s} {'CPU%':>6s} {'RSS MB':>7s} {'srv CPU%':>8s} {'setup s':>7s}")  # fmt: skip
    for n in sizes:
        res: dict[str, dict[str, float]] = {}
        for client in args.clients.split(","):
            try:
                r = stacks.run_one(f"{client}@{args.server}", n, warmup, window)
            except (TimeoutError, RuntimeError) as e:
                stacks.say(f"  {client:8s} {n:6d} not measured: {e}")
                continue
            res[client] = r
            stacks.say(f"  {client:8s} {n:6d} {r['offered']:10,.0f} {r['served']:10,.0f} "
                       f"{r['received']:11,.0f} {r['client_cpu']:6.1f} {r['client_rss']:7.1f} "
                       f"{r['server_cpu']:8.1f} {r['setup']:7.1f}")  # fmt: skip
            time.sleep(1.0)
        a, g = res.get("asyncua"), res.get("gateway")
        if a and g and a["received"] and g["client_cpu"]:
            per_a = a["received"] / max(a["client_cpu"], 0.1)
            per_g = g["received"] / max(g["client_cpu"], 0.1)
            stacks.say(f"  N={n}: gateway receives x{g['received'] / a['received']:.2f} the "
                       f"changes of asyncua's client, x{per_g / per_a:.1f} per CPU second "
                       f"({per_g * 100:,.0f} changes/s per core vs {per_a * 100:,.0f}); RSS "
                       f"{g['client_rss']:.0f} vs {a['client_rss']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
