"""``gateway demo``: a simulated factory, the gateway, the cloud receiver and a subscriber, live.

Each part is a real process (the same commands a user would run by hand); this process is the
subscriber and the screen. It reads the gateway's ``/status`` endpoint, receives what the cloud
publishes, and reads the press's run coil straight from the simulated device, so a closed-loop write
is seen where it lands.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core import records
from gateway.core.processes import ManagedProcess
from gateway.uplink.subscriber import Subscriber

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
SIM_BASE_PORT = 5020
CLOUD_BIND = "tcp://127.0.0.1:7000"
CLOUD_PUB = "tcp://127.0.0.1:7001"


@dataclass
class SubscriberView:
    """What the demo's own subscriber has seen of the cloud's fan-out."""

    counts: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0

    def on_record(self, stream: str, payload: bytes) -> None:
        self.counts[stream] = self.counts.get(stream, 0) + 1
        rec = records.decode(payload)
        if stream == records.STREAM_TELEMETRY:
            self.samples += len(rec["id"])
        elif stream == records.STREAM_EVENTS:
            self.events.append(rec)
            del self.events[:-8]


async def subscribe(view: SubscriberView, stop: asyncio.Event) -> None:
    def on_gap(_gap: object) -> None:
        view.gaps += 1

    with Subscriber(CLOUD_PUB, on_gap=on_gap) as sub:
        while not stop.is_set():
            try:
                rec = await asyncio.wait_for(sub.recv(), 0.2)
            except TimeoutError:
                continue
            view.on_record(rec.stream, rec.payload)


async def http_status(port: int) -> dict[str, Any] | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (TimeoutError, OSError):
        return None
    try:
        writer.write(b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 2.0)
        _, _, body = data.partition(b"\r\n\r\n")
        result: dict[str, Any] = json.loads(body)
        return result
    except (TimeoutError, OSError, ValueError):
        return None
    finally:
        writer.close()


async def read_run_coil(port: int) -> bool | None:
    """Read press1's run coil with pymodbus's client: the device's own view, not the gateway's."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    try:
        if not await client.connect():
            return None
        rr = await client.read_coils(0, count=1, device_id=1)
        return None if rr.isError() else bool(rr.bits[0])
    except Exception:
        return None
    finally:
        client.close()


def _fmt_ts(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "--:--:--"


def render(
    status: dict[str, Any] | None, view: SubscriberView, coil: bool | None, started: float
) -> str:
    out = []
    up = time.time() - started
    out.append(
        f"\x1b[1mEdge gateway demo\x1b[0m   running {int(up) // 60:02d}:{int(up) % 60:02d}"
        "   Ctrl-C stops everything"
    )
    out.append(
        "pymodbus devices -> gateway (native decode, rules) -> durable queue -> ZeroMQ "
        "-> cloud (SQLite) -> subscriber"
    )
    out.append("")
    if status is None:
        out.append("waiting for the gateway's status endpoint ...")
        return "\n".join(out)
    devs = "   ".join(
        f"{name} {'online' if st.get('connected') else 'OFFLINE'} rtt {st.get('last_rtt_ms', 0):.1f}ms"
        for name, st in status["devices"].items()
    )
    out.append(f"DEVICES   {devs}")
    out.append(
        f"SAMPLES   {status['samples_per_second']:.0f}/s   total {int(status['samples_total']):,}"
    )
    out.append("")
    out.append(f"{'POINT':<22}{'VALUE':>12}  {'UNIT':<7}{'QUALITY':<9}")
    for p in status["points"]:
        v = p["value"]
        if v is None:
            val = "-"
        elif p["unit"] in ("parts", "") and float(v).is_integer():
            val = f"{v:.0f}"
        else:  # model scores and probabilities have no unit and live below 1
            val = f"{v:.3g}" if p["unit"] == "" else f"{v:.2f}"
        out.append(f"{p['name']:<22}{val:>12}  {p['unit']:<7}{p['quality']:<9}")
    out.append("")
    alarms = [a for a in status.get("alarms", []) if a.get("active")]
    out.append(
        "ACTIVE ALARMS  "
        + (
            ", ".join(
                f"\x1b[31m{a['rule']} [{a.get('severity')}] {a.get('message', '')}\x1b[0m"
                for a in alarms
            )
            or "none"
        )
    )
    out.append("RULE ACTIVITY (newest last)")
    for ev in [e for e in status.get("recent", []) if e["kind"] in ("alarm", "write", "log")][-10:]:
        if ev["kind"] == "alarm":
            line = f"alarm {ev['state']:<7} {ev['rule']}: {ev['message']}"
        elif ev["kind"] == "write":
            line = f"write   {ev['point']} = {ev['value']:g} ({ev['outcome']}) by {ev['rule']}"
        else:
            line = f"log     {ev['rule']}: {ev['message']}"
        out.append(f"  {_fmt_ts(ev['ts'])}  {line}")
    coil_txt = {True: "\x1b[32mRUN\x1b[0m", False: "\x1b[33mSTOP\x1b[0m", None: "unreachable"}[coil]
    out.append(f"DEVICE VIEW  press1 run coil, read from the simulated device: {coil_txt}")
    out.append("")
    u = status["uplink"]
    streams = u.get("streams", {})
    depth = "  ".join(f"{s} {st.get('depth', 0)}" for s, st in sorted(streams.items()))
    out.append(
        f"UPLINK    link {u.get('link')}   queue depth {depth or '0'}   committed "
        f"{u.get('committed', 0):,}   acks {u.get('acks', 0):,}   last commit "
        f"{u.get('last_commit_ms', 0):.1f} ms"
    )
    recs = "  ".join(f"{s} {n:,}" for s, n in sorted(view.counts.items()))
    out.append(
        f"CLOUD -> SUBSCRIBER   records {recs or '0'}   samples {view.samples:,}   gaps {view.gaps}"
    )
    for ev in view.events[-3:]:
        if ev.get("kind") == "alarm":
            out.append(f"  received event: alarm {ev['state']} {ev['rule']} at {_fmt_ts(ev['ts'])}")
        elif ev.get("kind") == "write":
            out.append(f"  received event: write {ev['point']}={ev['value']:g} {ev['outcome']}")
        elif ev.get("kind") == "device":
            out.append(f"  received event: device {ev['device']} {ev['state']}")
    return "\n".join(out)


def demo_keys(config: Any, data_dir: Path) -> list[str]:
    """Throwaway CurveZMQ keys for this demo run; the ``gateway cloud`` options that use them.

    The demo runs secure like production: a fresh cloud key pair and gateway key pair under
    ``<data_dir>/keys`` (where examples/demo.yaml points), the gateway's key in the allow-list.
    A config with ``insecure: true`` gets a plaintext cloud instead.
    """
    from gateway.uplink import keys

    if config.uplink.insecure:
        return ["--insecure"]
    key_dir = data_dir / "keys"
    keys.create(key_dir, "cloud", force=True)
    keys.create(key_dir, config.id, force=True)
    keys.allow(key_dir / f"{config.id}.key", data_dir / "allowed")
    return ["--keys-dir", str(key_dir), "--allow-dir", str(data_dir / "allowed")]


async def _demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from gateway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    data_dir = Path(config.data_dir)
    # A fresh demo each time: the queue and the cloud store start empty together.
    shutil.rmtree(data_dir, ignore_errors=True)
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cloud_security = demo_keys(config, data_dir)
    py = [sys.executable, "-m", "gateway.cli"]
    procs = [
        ManagedProcess(
            "sim",
            [*py, "sim", "--factory", "demo", "--base-port", str(SIM_BASE_PORT)],
            logs / "sim.log",
        ),
        ManagedProcess(
            "cloud",
            [
                *py,
                "cloud",
                *cloud_security,
                "--bind",
                CLOUD_BIND,
                "--pub",
                CLOUD_PUB,
                "--db",
                str(data_dir / "cloud.db"),
            ],
            logs / "cloud.log",
        ),
        ManagedProcess("gateway", [*py, "run", args.config], logs / "gateway.log"),
    ]
    view = SubscriberView()
    sub_task = asyncio.create_task(subscribe(view, stop))
    port = int((config.metrics_listen or "127.0.0.1:9108").rpartition(":")[2])
    started = time.time()
    code = 0
    try:
        for p in procs:
            p.start()
        while not stop.is_set():
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print(
                    f"\n{dead[0].name} exited with {dead[0].poll()}; see {dead[0].log_path}",
                    file=sys.stderr,
                )
                code = 1
                break
            status, coil = await asyncio.gather(http_status(port), read_run_coil(SIM_BASE_PORT))
            screen = render(status, view, coil, started)
            if args.plain or not sys.stdout.isatty():
                screen = _ANSI.sub("", screen)
            if args.plain:
                print(f"--- {time.strftime('%H:%M:%S')}\n{screen}", flush=True)
            else:
                sys.stdout.write("\x1b[H\x1b[2J" + screen + "\n")
                sys.stdout.flush()
            if args.duration and time.time() - started >= args.duration:
                break
            try:
                await asyncio.wait_for(stop.wait(), 1.0 if not args.plain else 5.0)
            except TimeoutError:
                pass
    finally:
        stop.set()
        for p in reversed(procs):
            p.stop()
        await sub_task
        print(f"\nstopped; logs in {logs}")
    return code


def run_demo(args: argparse.Namespace) -> int:
    result = 0

    async def main() -> None:
        nonlocal result
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        result = await _demo(args, stop)

    asyncio.run(main())
    return result


__all__ = ["SubscriberView", "render", "run_demo"]
