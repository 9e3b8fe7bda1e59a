"""The ``gateway`` command: run | demo | check | cloud | command | fleet | subscribe | sim | keys |
queue | rules test | models | export | aas | resolve | discover.

It behaves like a Unix tool: ``--version``; the global options are accepted before and after the
subcommand; every ``--help`` shows the defaults; a closed pipe (``| head``) ends it quietly with
141 and Ctrl-C with 130 (or 0 where Ctrl-C is the normal way to stop: run, cloud, subscribe...).
"""

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


def load_or_exit(path: str, warnings: list[Any] | None = None) -> Any:
    from gateway.config import ConfigError, load_config

    try:
        return load_config(path, warnings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2 if exc.unreadable else 1) from None


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.config.deps import missing_dependencies
    from gateway.config.errors import as_warning
    from gateway.core.memory import compacted
    from gateway.core.runtime import Runtime, RuntimeStartError
    from gateway.rules.errors import RuleError
    from gateway.uplink.client import UplinkError

    warnings: list[Any] = []
    config = compacted(lambda: load_or_exit(args.config, warnings))
    for issue in warnings:  # what `gateway check` warns about: valid, probably not meant
        print(as_warning(issue), file=sys.stderr)
    missing = missing_dependencies(config.devices, config.models)
    for gap in missing:
        print(f"{args.config}: {gap}", file=sys.stderr)
    if missing:
        print(f"{args.config}: not started; `gateway check` lists every problem", file=sys.stderr)
        return 1
    try:
        runtime = Runtime(config)
        run_until_signal(runtime.run)
    except (RuleError, UplinkError, RuntimeStartError) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.config.check import check_main

    return check_main(args.config)


def cmd_models_test(args: argparse.Namespace) -> int:
    from gateway.infer.cli import test_main

    return test_main(args.config, args.model, args.data, plot=args.plot)


def cmd_sim(args: argparse.Namespace) -> int:
    from gateway.drivers.sim import bench_factory, demo_factory, run_factory

    if args.factory == "opcua":
        from gateway.drivers.sim.opcua_machine import run_machine

        return run_machine(args.base_port, args.speed)
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


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` where there is an X: not for flags, empty strings and "none"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == "" or default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class GatewayParser(argparse.ArgumentParser):
    """Every (sub)command's help shows its defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*args, **kwargs)


def add_global_options(p: argparse.ArgumentParser, top: bool) -> None:
    """Options every subcommand takes, before or after its name (``gateway queue peek
    --log-level debug``): only the top level has the default, so a later one wins."""
    p.add_argument(
        "--log-level",
        default="info" if top else argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
        help="log messages from this level up (stderr)" + ("" if top else " (default: info)"),
    )


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``p`` (subcommands of subcommands included)."""
    out: list[argparse.ArgumentParser] = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases: once
                out += [child, *_subparsers(child)]
    return out


def build_parser() -> argparse.ArgumentParser:
    from gateway import __version__

    p = GatewayParser(
        prog="gateway", description="Edge gateway runtime: devices -> rules -> durable uplink."
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_global_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", help="run the gateway with a config file")
    s.add_argument("config", help="gateway YAML config (see docs/config.md)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser(
        "check", help="validate a config file and its rules; non-zero exit if invalid"
    )
    s.add_argument("config", help="gateway YAML config")
    s.set_defaults(fn=cmd_check)

    from gateway.cloud.main import add_parser as add_cloud_parser

    add_cloud_parser(sub)

    from gateway.cloud.command import add_fleet_parser
    from gateway.cloud.command import add_parser as add_command_parser

    add_command_parser(sub)
    add_fleet_parser(sub)

    from gateway.uplink.inspect import add_parser as add_queue_parser
    from gateway.uplink.keys import add_parser as add_keys_parser

    add_keys_parser(sub)
    add_queue_parser(sub)

    from gateway.cloud.subscriber import add_parser as add_subscribe_parser

    add_subscribe_parser(sub)

    s = sub.add_parser(
        "sim", help="simulated devices on loopback: Modbus TCP (pymodbus), OPC UA (asyncua)"
    )
    s.add_argument(
        "--factory",
        choices=["demo", "bench", "opcua"],
        default="demo",
        help="which devices (opcua: the demo's OPC UA moulding machine alone, on --base-port)",
    )
    s.add_argument("--base-port", type=int, default=5020, help="first device's TCP port")
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

    from gateway.cloud.export import add_parser as add_export_parser
    from gateway.drivers.opcua.discover import add_parser as add_discover_parser
    from gateway.rules.testcmd import add_parser as add_rules_parser

    add_rules_parser(sub)
    add_export_parser(sub)
    from gateway.cloud.aas import add_parser as add_aas_parser
    from gateway.cloud.resolve import add_parser as add_resolve_parser

    add_aas_parser(sub)
    add_resolve_parser(sub)
    add_discover_parser(sub)

    from gateway.api.users import add_parser as add_users_parser

    add_users_parser(sub)

    s = sub.add_parser("demo", help="simulated factory + gateway + cloud + subscriber, live view")
    from gateway.demo.ports import DEFAULT_BASE_PORT, PORT_COUNT, parse_base_port

    s.add_argument(
        "--config",
        default="examples/demo.yaml",
        help="config to demo; only read: the demo runs a copy in its scratch folder",
    )
    s.add_argument(
        "--duration", type=float, default=0, help="stop after N seconds (0 = until Ctrl-C)"
    )
    s.add_argument(
        "--plain",
        action="store_true",
        help="one line per event instead of a live screen (the default when stdout is not a tty)",
    )
    s.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="scratch folder to keep (new, empty or a previous demo's); default: a temporary "
        "folder removed at the end",
    )
    s.add_argument(
        "--base-port",
        type=parse_base_port,
        metavar="N",
        default=DEFAULT_BASE_PORT,
        help=f"first of the {PORT_COUNT} loopback ports the demo uses: devices N..N+2, cloud "
        f"N+3/N+4, gateway status N+5, OPC UA machine N+6 (default {DEFAULT_BASE_PORT})",
    )
    s.set_defaults(fn=cmd_demo)
    for child in _subparsers(p):
        add_global_options(child, top=False)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_level)
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside the commands that take it as "stop"
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `gateway ... | head`: the reader has gone, so has our output
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
