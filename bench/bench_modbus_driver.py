"""Modbus TCP DRIVER path end to end on loopback: sockets -> framing -> decode -> SampleBatch.

A fast Modbus TCP server (one process, selectors, canned register contents, every complete request
of a read answered in one send) serves D devices; the client under test polls them in its own
process, so its CPU is measured alone (getrusage of that process):

* the gateway's ModbusTcpDevice, one request in flight per connection (``max_in_flight: 1``),
* the same with a poll group's blocks pipelined (``max_in_flight: N``),
* each compiled and with ``GATEWAY_PUREPYTHON=1``,
* pymodbus's AsyncModbusTcpClient polling the same blocks (one in flight, its only mode).

Load: D devices x B blocks x R registers (uint16 points, scale 0.1) every ``--period`` s. Prints
datapoints/s reached, responses/s and CPU seconds per 1k datapoints (median of ``--repeats``), and
ratios. ``--quick`` (20 devices, 2 s per case) is a half-minute smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------- server
def serve(base_port: int, devices: int) -> None:
    """Answer fc 3/4 reads on ``devices`` ports from ``base_port``; runs until killed."""
    sel = selectors.DefaultSelector()
    regs = bytes(range(256)) * 2
    for i in range(devices):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", base_port + i))
        ls.listen(8)
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, None)
    bufs: dict[socket.socket, bytearray] = {}
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if key.data is None:
                conn, _ = s.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
                bufs[conn] = bytearray()
                sel.register(conn, selectors.EVENT_READ, 1)
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                bufs.pop(s, None)
                continue
            buf = bufs[s]
            buf += data
            out = bytearray()
            pos = 0
            while len(buf) - pos >= 12:
                length = int.from_bytes(buf[pos + 4 : pos + 6], "big")
                count = int.from_bytes(buf[pos + 10 : pos + 12], "big")
                n = 2 * min(count, 125)
                out += buf[pos : pos + 2] + b"\x00\x00" + (n + 3).to_bytes(2, "big")
                out += bytes((buf[pos + 6], buf[pos + 7], n)) + regs[:n]
                pos += 6 + length
            del buf[:pos]
            if out:
                try:
                    s.sendall(out)
                except OSError:
                    pass


# ------------------------------------------------------------------------------------- clients
def _device_config(i: int, port: int, blocks: int, registers: int, period: float, in_flight: int):  # type: ignore[no-untyped-def]
    from gateway.config import DeviceConfig, PointConfig

    points = tuple(
        PointConfig(name=f"r{a}", address=a, type="uint16", scale=0.1)
        for a in range(blocks * registers)
    )
    kw = {"max_in_flight": in_flight} if in_flight > 1 else {}
    return DeviceConfig(
        name=f"d{i}", port=port, timeout=1.0, max_registers=registers, max_gap=0,
        poll_groups={"default": period}, points=points, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def _run_gateway(a: argparse.Namespace) -> dict[str, float]:
    from gateway.drivers.modbus_tcp import ModbusTcpDevice

    counts = [0, 0]

    def on_batch(b) -> None:  # type: ignore[no-untyped-def]
        counts[0] += len(b.point_ids)
        counts[1] += 1

    devs = []
    for i in range(a.devices):
        cfg = _device_config(i, a.base_port + i, a.blocks, a.registers, a.period, a.in_flight)
        ids = {f"{cfg.name}.{p.name}": n for n, p in enumerate(cfg.points)}
        devs.append(ModbusTcpDevice(cfg, ids, on_batch, lambda e: None))
    for d in devs:
        await d.start()
    await asyncio.sleep(a.warmup)
    return await _measure(a, counts, lambda: sum(d.stats()["responses"] for d in devs), devs)


async def _run_pymodbus(a: argparse.Namespace) -> dict[str, float]:
    from pymodbus.client import AsyncModbusTcpClient

    counts = [0, 0]
    resp = [0]

    async def poll(port: int) -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        await client.connect()
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            for b in range(a.blocks):
                rr = await client.read_holding_registers(
                    b * a.registers, count=a.registers, device_id=1
                )
                resp[0] += 1
                if not rr.isError():
                    values = client.convert_from_registers(rr.registers, client.DATATYPE.UINT16)
                    scaled = [v * 0.1 for v in values]  # type: ignore[union-attr]
                    counts[0] += len(scaled)
                    counts[1] += 1
            due += a.period
            await asyncio.sleep(max(0.0, due - loop.time()))

    tasks = [asyncio.create_task(poll(a.base_port + i)) for i in range(a.devices)]
    await asyncio.sleep(a.warmup)
    out = await _measure(a, counts, lambda: resp[0], [])
    for t in tasks:
        t.cancel()
    return out


async def _measure(a, counts, responses, devs) -> dict[str, float]:  # type: ignore[no-untyped-def]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0, n0, resp0, t0 = counts[0], counts[1], responses(), time.perf_counter()
    await asyncio.sleep(a.duration)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    dt = time.perf_counter() - t0
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    cpu = user + system
    dps = (counts[0] - c0) / dt
    for d in devs:
        await d.stop()
    return {
        "dps": dps,
        "responses": (responses() - resp0) / dt,
        "batches": (counts[1] - n0) / dt,
        "cpu_pct": 100.0 * cpu / dt,
        "cpu_ms_per_1k": 1000.0 * cpu / max(1.0, (counts[0] - c0) / 1000.0),
        "user_share": user / cpu if cpu else 0.0,
    }


def client_main(a: argparse.Namespace) -> None:
    if a.client == "pymodbus":
        res = asyncio.run(_run_pymodbus(a))
    else:
        res = asyncio.run(_run_gateway(a))
    print(json.dumps(res), flush=True)


# ------------------------------------------------------------------------------------- driver
def _free_base(n: int) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    from loadrig import free_port_block

    return free_port_block(n)


def run_one(a: argparse.Namespace, client: str, in_flight: int, pure: bool) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("GATEWAY_PUREPYTHON", None)
    if pure:
        env["GATEWAY_PUREPYTHON"] = "1"
    cmd = [sys.executable, __file__, "--client", client, "--in-flight", str(in_flight),
           "--base-port", str(a.base_port), "--devices", str(a.devices),
           "--blocks", str(a.blocks), "--registers", str(a.registers),
           "--period", str(a.period), "--duration", str(a.duration), "--warmup", str(a.warmup)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.duration + 60)
    if out.returncode:
        raise SystemExit(f"client {client} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--blocks", type=int, default=4, help="read requests per device per poll")
    ap.add_argument("--registers", type=int, default=25, help="registers per read request")
    ap.add_argument("--period", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma list of case labels to run")
    ap.add_argument("--client", default="", help=argparse.SUPPRESS)
    ap.add_argument("--in-flight", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--base-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.base_port, a.devices)
        return
    if a.client:
        client_main(a)
        return
    if a.quick:
        a.devices, a.duration, a.warmup, a.repeats = 20, 2.0, 1.0, 1
    a.base_port = _free_base(a.devices)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--base-port", str(a.base_port),
         "--devices", str(a.devices)], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("server did not start")
        cases = [
            ("gateway 1-in-flight", "gateway", 1, False),
            (f"gateway pipelined x{a.blocks}", "gateway", a.blocks, False),
            ("pure 1-in-flight", "gateway", 1, True),
            (f"pure pipelined x{a.blocks}", "gateway", a.blocks, True),
            ("pymodbus", "pymodbus", 1, False),
        ]
        if a.only:
            keep = set(a.only.split(","))
            cases = [c for c in cases if c[0] in keep]
        offered = a.devices * a.blocks * a.registers / a.period
        print(f"load: {a.devices} devices x {a.blocks} blocks x {a.registers} registers "
              f"@ {a.period * 1000:.0f} ms = {offered:,.0f} dp/s offered; "
              f"median of {a.repeats} x {a.duration:.0f} s")  # fmt: skip
        results: dict[str, dict[str, float]] = {}
        for label, client, n, pure in cases:
            runs = [run_one(a, client, n, pure) for _ in range(a.repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            results[label] = med
            print(f"{label:24s} {med['dps']:>10,.0f} dp/s {med['responses']:>8,.0f} resp/s "
                  f"{med['batches']:>8,.0f} batches/s  CPU {med['cpu_pct']:5.1f} %  "
                  f"{med['cpu_ms_per_1k']:6.2f} ms CPU per 1k dp "
                  f"({100 * med['user_share']:.0f} % user)", flush=True)  # fmt: skip
        ref = results.get("pymodbus")
        if ref:
            for label, r in results.items():
                if label != "pymodbus":
                    print(f"  pymodbus CPU per dp / {label}: "
                          f"x{ref['cpu_ms_per_1k'] / r['cpu_ms_per_1k']:.1f}")  # fmt: skip
        one = results.get("gateway 1-in-flight")
        pip = results.get(f"gateway pipelined x{a.blocks}")
        if one and pip:
            print(f"  1-in-flight / pipelined CPU per dp: "
                  f"x{one['cpu_ms_per_1k'] / pip['cpu_ms_per_1k']:.2f}")  # fmt: skip
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
