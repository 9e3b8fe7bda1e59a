"""``gateway cloud``: a CloudReceiver on an SQLite store with periodic per-gateway status lines."""

from __future__ import annotations

import asyncio
import signal

from gateway.uplink.keys import AllowList, KeyPair
from gateway.uplink.receiver import CloudReceiver
from gateway.uplink.store import SQLiteCloudStore


async def run_cloud(
    bind: str,
    pub_bind: str,
    db_path: str,
    status_interval: float = 2.0,
    stop: asyncio.Event | None = None,
    print_status: bool = True,
    *,
    server_key: KeyPair | None = None,
    allow_dir: str | None = None,
) -> None:
    """Run a receiver on an SQLite store until ``stop`` (or SIGINT/SIGTERM) — ``gateway cloud``."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                pass
    allow = AllowList(allow_dir) if allow_dir is not None else None
    receiver = CloudReceiver(
        bind, pub_bind or None, SQLiteCloudStore(db_path), server_key=server_key, allow=allow
    )
    task = asyncio.create_task(receiver.run(stop))
    try:
        ready = asyncio.ensure_future(receiver.ready.wait())
        await asyncio.wait({task, ready}, return_when="FIRST_COMPLETED")
        ready.cancel()
        if print_status and receiver.ready.is_set():
            mode = f"CURVE, {len(allow)} allowed keys in {allow_dir}" if allow else "PLAINTEXT"
            print(
                f"cloud: ROUTER {receiver.endpoint} ({mode})  PUB {receiver.pub_endpoint}  "
                f"store {db_path}",
                flush=True,
            )
        while not task.done():
            await asyncio.wait({task}, timeout=status_interval)
            if print_status and not task.done():
                for gw, st in receiver.status().items():
                    streams = " ".join(f"{s}={v['hw']}" for s, v in st["streams"].items())  # type: ignore[attr-defined]
                    print(
                        f"cloud: {gw} {'up' if st['connected'] else 'down'} "
                        f"{st['records_per_s']:.0f} rec/s records={st['records']} "
                        f"dup={st['duplicates']} dropped={st['dropped']} {streams}",
                        flush=True,
                    )
                bad = {k: v for k, v in receiver.counters().items() if v and k != "auth_accepted"}
                if bad:
                    print(
                        "cloud: rejected " + " ".join(f"{k}={v}" for k, v in bad.items()),
                        flush=True,
                    )
        await task
    finally:
        if not task.done():
            stop.set()
            await task
