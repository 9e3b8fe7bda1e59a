"""The ``gateway`` command: run | demo | check | cloud | subscribe | sim | keys | queue | rules test |
models."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def setup_logging(level: str) -> None:
    """journald adds its own timestamps; a terminal gets ours."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr)


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> None:
    """Run ``main(stop)`` on a fresh loop; SIGINT/SIGTERM set ``stop`` for a clean shutdown."""

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(wrapper())


def load_or_exit(path: str) -> Any:
    from gateway.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2 if exc.unreadable else 1) from None


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.core.runtime import Runtime, RuntimeStartError
    from gateway.rules.errors import RuleError
    from gateway.uplink.client import UplinkError

    config = load_or_exit(args.config)
    try:
        runtime = Runtime(config)
        run_until_signal(runtime.run)
    except (RuleError, UplinkError, RuntimeStartError) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.config import check_main
    from gateway.core.runtime import build_point_table
    from gateway.rules.engine import RuleEngine
    from gateway.rules.errors import RuleError

    code = check_main(args.config)
    if code != 0:
        return code
    config = load_or_exit(args.config)
    try:
        RuleEngine(config.rules, build_point_table(config))
    except RuleError as exc:
        print(exc, file=sys.stderr)
        return 1
    from gateway.infer.cli import check_models

    return check_models(args.config)


def cmd_models_test(args: argparse.Namespace) -> int:
    from gateway.infer.cli import test_main

    return test_main(args.config, args.model, args.data, plot=args.plot)


def cmd_cloud(args: argparse.Namespace) -> int:
    from gateway.uplink import keys
    from gateway.uplink.cloud import run_cloud

    server_key = None
    allow_dir = None
    if args.insecure:
        logging.getLogger("gateway").warning(
            "INSECURE: accepting plaintext, unauthenticated gateways on %s (--insecure); "
            "any host that reaches this port can write as any gateway",
            args.bind,
        )
    else:
        secret = args.secret_key or os.path.join(args.keys_dir, "cloud.key_secret")
        try:
            server_key = keys.load_secret(secret)
        except keys.KeyError_ as exc:
            print(
                f"gateway cloud: {exc}\n  create the receiver's key pair with "
                f"`gateway keys new --dir {args.keys_dir} --name cloud`, allow gateways with "
                f"`gateway keys allow GW.key --allow-dir {args.allow_dir}`, or pass --insecure",
                file=sys.stderr,
            )
            return 2
        allow_dir = args.allow_dir
        os.makedirs(allow_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    run_until_signal(
        lambda stop: run_cloud(
            args.bind,
            args.pub,
            args.db,
            status_interval=args.status_interval,
            stop=stop,
            print_status=args.status_interval > 0,
            server_key=server_key,
            allow_dir=allow_dir,
        )
    )
    return 0


def cmd_subscribe(args: argparse.Namespace) -> int:
    from gateway.core.records import decode
    from gateway.uplink.subscriber import run_subscribe

    run_until_signal(lambda stop: run_subscribe(args.connect, args.topic, decode=decode, stop=stop))
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from gateway.drivers.sim import bench_factory, demo_factory, run_factory

    if args.factory == "demo":
        specs = demo_factory(args.base_port)
    else:
        specs = bench_factory(args.devices, args.registers, args.base_port)
    clock = scaled_clock(args.speed)
    logging.getLogger("gateway.sim").info(
        "simulating %d devices on ports %d..%d (speed x%g)",
        len(specs),
        args.base_port,
        args.base_port + len(specs) - 1,
        args.speed,
    )
    run_until_signal(lambda stop: run_factory(specs, stop, clock=clock))
    return 0


def scaled_clock(speed: float) -> Callable[[], float]:
    """Wall time running ``speed`` times faster from now on: lets rigs see slow physics quickly."""
    import time

    if speed == 1.0:
        return time.time
    t0 = time.time()
    return lambda: t0 + (time.time() - t0) * speed


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gateway", description="Edge gateway runtime: devices -> rules -> durable uplink."
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", help="run the gateway with a config file")
    s.add_argument("config", help="gateway YAML config (see docs/config.md)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser(
        "check", help="validate a config file and its rules; non-zero exit if invalid"
    )
    s.add_argument("config")
    s.set_defaults(fn=cmd_check)

    s = sub.add_parser("cloud", help="run the cloud receiver (ROUTER + SQLite store + PUB fan-out)")
    s.add_argument(
        "--bind", default="tcp://127.0.0.1:7000", help="ROUTER endpoint gateways connect to"
    )
    s.add_argument("--pub", default="tcp://127.0.0.1:7001", help="PUB endpoint for subscribers")
    s.add_argument("--db", default="var/cloud.db", help="SQLite store file")
    s.add_argument(
        "--status-interval", type=float, default=2.0, help="seconds between status lines; 0 = off"
    )
    s.add_argument(
        "--insecure", action="store_true", help="accept plaintext, unauthenticated gateways"
    )
    s.add_argument(
        "--keys-dir", default="var/cloud/keys", help="directory of the receiver's cloud.key_secret"
    )
    s.add_argument(
        "--secret-key", default=None, help="the receiver's key file (overrides --keys-dir)"
    )
    s.add_argument(
        "--allow-dir",
        default="var/cloud/allowed",
        help="allow-list: one NAME.key per gateway (re-read on change, no restart needed)",
    )
    s.set_defaults(fn=cmd_cloud)

    from gateway.uplink.inspect import add_parser as add_queue_parser
    from gateway.uplink.keys import add_parser as add_keys_parser

    add_keys_parser(sub)
    add_queue_parser(sub)

    s = sub.add_parser("subscribe", help="print records the cloud publishes")
    s.add_argument("--connect", default="tcp://127.0.0.1:7001")
    s.add_argument("--topic", default="", help="topic prefix, e.g. 'demo-gw/events'")
    s.set_defaults(fn=cmd_subscribe)

    s = sub.add_parser("sim", help="simulated Modbus TCP devices (pymodbus servers) on loopback")
    s.add_argument("--factory", choices=["demo", "bench"], default="demo")
    s.add_argument("--base-port", type=int, default=5020)
    s.add_argument("--devices", type=int, default=50, help="bench factory: number of devices")
    s.add_argument("--registers", type=int, default=20, help="bench factory: registers per device")
    s.add_argument(
        "--speed", type=float, default=1.0, help="run the simulated physics N times faster"
    )
    s.set_defaults(fn=cmd_sim)

    s = sub.add_parser("models", help="TFLite models: `models test MODEL --data FILE`")
    msub = s.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    m = msub.add_parser("test", help="run a configured model over a recording, print its outputs")
    m.add_argument("model", help="model name from the config's models:")
    m.add_argument("--data", required=True, help="recording (.csv ts,point,value or .jsonl)")
    m.add_argument("--config", default="examples/demo.yaml", help="gateway config declaring it")
    m.add_argument("--plot", action="store_true", help="add a sparkline per output")
    m.set_defaults(fn=cmd_models_test)

    from gateway.rules.testcmd import add_parser as add_rules_parser
    from gateway.uplink.export import add_parser as add_export_parser

    add_rules_parser(sub)
    add_export_parser(sub)

    s = sub.add_parser("demo", help="simulated factory + gateway + cloud + subscriber, live view")
    s.add_argument("--config", default="examples/demo.yaml")
    s.add_argument(
        "--duration", type=float, default=0, help="stop after N seconds (0 = until Ctrl-C)"
    )
    s.add_argument(
        "--plain", action="store_true", help="print status lines instead of a live screen"
    )
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
