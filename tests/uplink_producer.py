"""A gateway-side process for fault tests: a real Uplink submitting numbered records at a rate.

Payloads are ``b"<run>:<i>"`` per stream (``telemetry`` every record, ``events`` every 10th).
After each ``flush()`` (= accepted, fsync'd) it appends ``<run> <stream> <last i>`` lines to the
accepted log and fsyncs it, so a test knows a lower bound of what must reach the cloud even when
this process is SIGKILLed. SIGTERM: stop producing, wait until everything is acked, exit 0.

    python tests/uplink_producer.py --endpoint tcp://127.0.0.1:P --queue q.db --run 3 ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

_TERM: list[bool] = []  # SIGTERM seen: caught from here on, before the heavy imports
signal.signal(signal.SIGTERM, lambda *_: _TERM.append(True))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import UplinkConfig  # noqa: E402
from gateway.uplink.client import Uplink  # noqa: E402


async def main(a: argparse.Namespace) -> int:
    config = UplinkConfig(
        endpoints=(a.endpoint,),
        queue=a.queue,
        batch_max_records=1000,
        batch_max_delay=0.02,
        ack_timeout=a.ack_timeout,
        insecure=a.key_dir is None,
        key_dir=a.key_dir,
        server_key=a.server_key,
    )
    up = Uplink(config, a.id)
    await up.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if _TERM:
        stop.set()
    counters = {"telemetry": 0, "events": 0}
    log = open(a.log, "a", encoding="utf-8")  # noqa: SIM115
    t0 = time.monotonic()
    produced = 0
    last_flush = t0
    status_at = 0.0
    while not stop.is_set() and (a.count == 0 or produced < a.count):
        now = time.monotonic()
        due = (a.count or 10**12) if a.rate == 0 else int((now - t0) * a.rate)
        burst = min(due - produced, 2000, (a.count - produced) if a.count else 2000)
        for _ in range(max(0, burst)):
            up.submit("telemetry", b"%d:%d" % (a.run, counters["telemetry"]))
            counters["telemetry"] += 1
            if produced % 10 == 0:
                up.submit("events", b"%d:%d" % (a.run, counters["events"]))
                counters["events"] += 1
            produced += 1
        if now - last_flush >= 0.05 or (a.count and produced >= a.count):
            await up.flush()
            last_flush = now
            log.write("".join(f"{a.run} {s} {n - 1}\n" for s, n in counters.items() if n))
            log.flush()
            os.fsync(log.fileno())
        if a.status and now - status_at >= 0.2:
            status_at = now
            Path(a.status).write_text(
                json.dumps({"run": a.run, "produced": produced, **up.stats()})
            )
        await asyncio.sleep(0.005 if a.rate else 0)
    await up.flush()
    log.write("".join(f"{a.run} {s} {n - 1}\n" for s, n in counters.items() if n))
    log.close()
    print(f"producer run {a.run}: {produced} records accepted; draining", flush=True)
    deadline = time.monotonic() + a.drain_timeout
    while time.monotonic() < deadline:
        st = up.stats()
        if a.status:
            Path(a.status).write_text(json.dumps({"produced": produced, **st}))
        streams = st["streams"]
        assert isinstance(streams, dict)
        if all(v["acked_hw"] == v["next_seq"] - 1 for v in streams.values()):
            break
        if a.count and not stop.is_set():
            pass  # --count: keep running until drained (no SIGTERM needed)
        await asyncio.sleep(0.05)
    else:
        print("producer: not drained in time", flush=True)
        await up.stop()
        return 3
    await up.stop()
    print("producer: drained", flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--id", default="chaos-gw")
    ap.add_argument("--run", type=int, required=True)
    ap.add_argument("--rate", type=float, default=1500, help="records/s; 0 = as fast as possible")
    ap.add_argument("--count", type=int, default=0, help="stop producing after N (0 = never)")
    ap.add_argument("--log", required=True)
    ap.add_argument("--status", default=None, help="JSON stats file, rewritten every 0.2 s")
    ap.add_argument("--key-dir", default=None)
    ap.add_argument("--server-key", default=None)
    ap.add_argument("--ack-timeout", type=float, default=1.0)
    ap.add_argument("--drain-timeout", type=float, default=60.0)
    sys.exit(asyncio.run(main(ap.parse_args())))
