"""``gateway demo``: a simulated factory, the gateway, the cloud receiver and a subscriber, live.

Each part is a real process (the same commands a user would run by hand); this process is the
subscriber and the screen. It reads the gateway's ``/status`` endpoint, receives what the cloud
publishes, and reads the press's run coil straight from the simulated device, so a closed-loop write
is seen where it lands. Everything it writes stays in its scratch folder (``scratch.py``), and
every port is checked before anything starts (``ports.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gateway.core.processes import ManagedProcess
from gateway.demo.ports import HOST, DemoPorts, busy_message, busy_ports
from gateway.demo.scratch import (
    DEMO_USER,
    DemoSetupError,
    demo_login,
    prepare_workdir,
    scratch_config,
)
from gateway.demo.screen import (
    ModelLabels,
    PlainLog,
    SubscriberView,
    fit,
    frame,
    render_lines,
    summary_line,
)

SCREEN_PERIOD, PLAIN_PERIOD = 1.0, 0.5  # seconds between status polls


async def subscribe(view: SubscriberView, endpoint: str, stop: asyncio.Event) -> None:
    from gateway.cloud.subscriber import Subscriber

    def on_gap(_gap: object) -> None:
        view.gaps += 1

    with Subscriber(endpoint, on_gap=on_gap) as sub:
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


def demo_keys(config: Any, work: Path) -> list[str]:
    """Throwaway CurveZMQ keys for this demo run; the ``gateway cloud`` options that use them.

    The demo runs secure like production: a fresh cloud key pair and gateway key pair under
    ``<work>/keys`` (where the demo's copy of the config points), the gateway's key in the
    allow-list. A config with ``insecure: true`` gets a plaintext cloud instead.
    """
    from gateway.uplink import keys

    if config.uplink.insecure:
        return ["--insecure"]
    key_dir = work / "keys"
    keys.create(key_dir, "cloud")
    keys.create(key_dir, config.id)
    keys.allow(key_dir / f"{config.id}.key", work / "allowed")
    return ["--keys-dir", str(key_dir), "--allow-dir", str(work / "allowed")]


def demo_control(work: Path) -> list[str]:
    """The demo receiver's control socket in its scratch folder (`gateway command demo-gw ping
    --control-dir WORK/cloud/control`); none when that path is too long for a Unix socket."""
    control = work / "cloud" / "control"
    if len(os.fsencode(control / "cloud.sock")) > 107:
        return ["--control-dir", ""]
    return ["--control-dir", str(control), "--name", "cloud"]


def processes(ports: DemoPorts, config: Any, work: Path, copy: Path) -> list[ManagedProcess]:
    logs = work / "logs"
    py = [sys.executable, "-m", "gateway.cli"]
    cloud_security = demo_keys(config, work)
    (work / "cloud").mkdir(exist_ok=True)
    return [
        ManagedProcess(
            "sim",
            [*py, "sim", "--factory", "demo", "--base-port", str(ports.base)],
            logs / "sim.log",
        ),
        ManagedProcess(
            "opcua",
            [*py, "sim", "--factory", "opcua", "--base-port", str(ports.opcua)],
            logs / "opcua.log",
        ),
        ManagedProcess(
            "cloud",
            [
                *py,
                "cloud",
                *cloud_security,
                "--bind",
                ports.cloud_endpoint,
                "--pub",
                ports.pub_endpoint,
                "--db",
                str(work / "cloud" / "cloud.db"),
                *demo_control(work),
            ],
            logs / "cloud.log",
        ),
        ManagedProcess("gateway", [*py, "run", str(copy)], logs / "gateway.log"),
    ]


class Output:
    """The screen when stdout is a terminal (and not ``--plain``), plain lines otherwise."""

    def __init__(self, plain: bool, model: ModelLabels | None = None, page: str = "") -> None:
        self.plain = plain or not sys.stdout.isatty()
        self.model = model
        self.page = page
        self.log = PlainLog()
        enc = (getattr(sys.stdout, "encoding", None) or "").lower()
        self.ellipsis = "…" if enc.startswith("utf") else "~"

    def show(
        self, status: dict[str, Any] | None, view: SubscriberView, coil: bool | None, started: float
    ) -> None:
        if self.plain:
            for line in self.log.lines(status, view, coil, time.time()):
                print(line, flush=True)
            return
        size = shutil.get_terminal_size()
        lines = render_lines(
            status,
            view,
            coil,
            started,
            size.columns,
            size.lines,
            self.ellipsis,
            self.model,
            self.page,
        )
        sys.stdout.write(frame(lines, color=True))
        sys.stdout.flush()

    def close(self, status: dict[str, Any] | None, view: SubscriberView) -> None:
        if status is None:
            return
        line = f"{time.strftime('%H:%M:%S')} summary {summary_line(status, view)}"
        if not self.plain:  # below the last frame, which stays on the screen
            line = "\n" + fit(line, shutil.get_terminal_size().columns, self.ellipsis)
        print(line, flush=True)


async def _demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from gateway.config import ConfigError, load_config

    # The coil probe fails while the simulator starts; the screen says "unreachable" already.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    ports = DemoPorts(args.base_port)
    try:
        load_config(args.config)  # the user's file, so errors name it
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    busy = busy_ports(ports)
    if busy:
        print(busy_message(ports, busy), file=sys.stderr)
        return 1
    owned = args.workdir is None
    try:  # before the workdir is emptied: it may hold the config (a previous run's copy)
        source = Path(args.config).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"gateway demo: {args.config}: cannot read it: {exc}", file=sys.stderr)
        return 1
    try:
        work = prepare_workdir(args.workdir)
        try:
            copy = scratch_config(Path(args.config), work, ports, source)
            config = load_config(copy)
            password = demo_login(config.data_dir)
        except (DemoSetupError, ConfigError, OSError):
            if owned:
                shutil.rmtree(work, ignore_errors=True)
            raise
    except (DemoSetupError, ConfigError, OSError) as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 1
    procs = processes(ports, config, work, copy)
    view = SubscriberView()
    page = f"http://{HOST}:{ports.metrics}/  login {DEMO_USER} / {password}"
    out = Output(args.plain, ModelLabels.of(config.assets), page)
    if out.plain:
        print(
            f"gateway demo: ports {ports.describe()}, scratch folder {work}, "
            f"config {args.config} (not modified)",
            flush=True,
        )
        print(f"gateway demo: operator page {page} (to acknowledge, write and poll once)",
              flush=True)  # fmt: skip
    sub_task = asyncio.create_task(subscribe(view, ports.pub_endpoint, stop))
    started = time.time()
    code, status = 0, None
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
            polled, coil = await asyncio.gather(
                http_status(ports.metrics), read_run_coil(ports.device("press1"))
            )
            status = polled or status
            out.show(polled, view, coil, started)
            if args.duration and time.time() - started >= args.duration:
                break
            try:
                await asyncio.wait_for(stop.wait(), PLAIN_PERIOD if out.plain else SCREEN_PERIOD)
            except TimeoutError:
                pass
    finally:
        stop.set()
        for p in reversed(procs):
            p.stop()
        await sub_task
        removed = owned and code == 0
        if removed:  # before printing: a closed stdout must not leave the folder behind
            shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(BrokenPipeError):  # the reader left: say nothing more
            out.close(status, view)
            if removed:
                print("stopped; scratch folder removed (keep it with --workdir DIR)")
            else:
                print(f"stopped; logs in {work / 'logs'}")
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

    try:
        asyncio.run(main())
    except BrokenPipeError:  # `gateway demo | head`: children are stopped, the folder is gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush cannot fail
        return 1
    return result
