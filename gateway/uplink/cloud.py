"""``gateway cloud``: a CloudReceiver on an SQLite store with periodic per-gateway status lines."""

from __future__ import annotations

import asyncio
import signal

from gateway.uplink.keys import AllowList, KeyPair
from gateway.uplink.receiver import CloudReceiver
from gateway.uplink.store import SQLiteCloudStore

MAX_STATUS_GATEWAYS = 50  # gateways per status round (connected ones first)
MAX_STATUS_STREAMS = 8  # streams per gateway line


def status_lines(receiver: CloudReceiver) -> list[str]:
    """One status round. Bounded whatever peers send: names are bounded by the wire rules, and
    so is how many gateways and streams are printed."""
    status = receiver.status()
    order = sorted(status, key=lambda gw: (not status[gw]["connected"], gw))
    lines = []
    for gw in order[:MAX_STATUS_GATEWAYS]:
        st = status[gw]
        streams: dict[str, dict[str, int]] = st["streams"]  # type: ignore[assignment]
        shown = " ".join(f"{s}={v['hw']}" for s, v in list(streams.items())[:MAX_STATUS_STREAMS])
        if len(streams) > MAX_STATUS_STREAMS:
            shown += f" (+{len(streams) - MAX_STATUS_STREAMS} streams)"
        alarm = " DUPLICATE-IDENTITY" if st["duplicate_identity"] else ""
        lines.append(
            f"cloud: {gw} {'up' if st['connected'] else 'down'}{alarm} "
            f"{st['records_per_s']:.0f} rec/s records={st['records']} "
            f"dup={st['duplicates']} dropped={st['dropped']} {shown}"
        )
    if len(order) > MAX_STATUS_GATEWAYS:
        lines.append(f"cloud: (+{len(order) - MAX_STATUS_GATEWAYS} more gateways)")
    bad = {k: v for k, v in receiver.counters().items() if v and k != "auth_accepted"}
    if bad:
        lines.append("cloud: rejected/alarms " + " ".join(f"{k}={v}" for k, v in bad.items()))
    return lines


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
        # status_interval 0 means no status lines: wait for the receiver alone (a zero timeout
        # would spin this loop on a whole core).
        interval = status_interval if print_status and status_interval > 0 else None
        while not task.done():
            await asyncio.wait({task}, timeout=interval)
            if interval is not None and not task.done():
                for line in status_lines(receiver):
                    print(line, flush=True)
        await task
    finally:
        if not task.done():
            stop.set()
            await task
