"""Reference for bench_e2e: the same polling load done by pymodbus's own async client (decode only,
no rules, no uplink), so the gateway's CPU can be compared with what the leading Python stack spends
on the polling alone."""

from __future__ import annotations

import argparse
import asyncio
import time

from pymodbus.client import AsyncModbusTcpClient


async def poll_device(
    port: int, registers: int, period: float, stop_at: float, counts: list[int]
) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    await client.connect()
    next_t = time.monotonic()
    while time.monotonic() < stop_at:
        rr = await client.read_holding_registers(0, count=registers, device_id=1)
        if not rr.isError():
            values = client.convert_from_registers(rr.registers, client.DATATYPE.UINT16)
            counts[0] += len(values) if isinstance(values, list) else 1
        next_t += period
        delay = next_t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_t = time.monotonic()
    client.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-port", type=int, required=True)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--registers", type=int, default=20)
    ap.add_argument("--period", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=30)
    args = ap.parse_args()
    counts = [0]
    stop_at = time.monotonic() + args.duration
    await asyncio.gather(
        *(
            poll_device(args.base_port + i, args.registers, args.period, stop_at, counts)
            for i in range(args.devices)
        )
    )
    print(f"values={counts[0]}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
