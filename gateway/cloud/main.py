"""``gateway cloud``: a CloudReceiver on an SQLite or PostgreSQL store with periodic per-gateway
status lines."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import zmq

from gateway.cloud.control import ControlError, ControlServer, default_name
from gateway.cloud.receiver import CloudReceiver
from gateway.cloud.service import ReceiverService
from gateway.cloud.store import is_postgres, redacted, store_for
from gateway.core.httpd import StatusServer
from gateway.uplink.keys import AllowList, KeyPair

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
    control_dir: str | None = None,
    name: str | None = None,
    status_listen: str | None = None,
    partition: str = "day",
    retention: float | None = None,
    points: bool = True,
) -> None:
    """Run a receiver on an SQLite or PostgreSQL store (``db_path``) until ``stop`` (or
    SIGINT/SIGTERM) — ``gateway cloud``.

    ``control_dir``: where its control socket goes (``gateway command``); ``status_listen``
    (HOST:PORT): ``/metrics``, ``/health``, ``/status``; ``name``: the receiver's name in both
    (default: from its ROUTER endpoint). ``partition``/``retention``/``points``: PostgreSQL's
    partitions, retention in days and decoded point rows."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                pass
    allow = AllowList(allow_dir) if allow_dir is not None else None
    store = store_for(db_path, partition=partition, retention=retention, points=points)
    receiver = CloudReceiver(bind, pub_bind or None, store, server_key=server_key, allow=allow)
    task = asyncio.create_task(receiver.run(stop))
    services = Services()
    try:
        ready = asyncio.ensure_future(receiver.ready.wait())
        await asyncio.wait({task, ready}, return_when="FIRST_COMPLETED")
        ready.cancel()
        if receiver.ready.is_set():
            services = await start_services(receiver, control_dir, name, status_listen)
        if print_status and receiver.ready.is_set():
            mode = f"CURVE, {len(allow)} allowed keys in {allow_dir}" if allow else "PLAINTEXT"
            print(
                f"cloud: ROUTER {receiver.endpoint} ({mode})  PUB {receiver.pub_endpoint}  "
                f"store {store.describe()}",
                flush=True,
            )
            for line in services.describe():
                print(line, flush=True)
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
        await services.stop()


class Services:
    """The receiver's control socket and status server, whichever were asked for."""

    def __init__(self) -> None:
        self.control: ControlServer | None = None
        self.http: StatusServer | None = None

    def describe(self) -> list[str]:
        out = []
        if self.control is not None:
            out.append(f"cloud: receiver {self.control.name}  control {self.control.path}")
        if self.http is not None:
            out.append(
                f"cloud: status http://{self.http.host}:{self.http.port}/ (metrics, health, status)"
            )
        return out

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.control is not None:
            await self.control.stop()


async def start_services(
    receiver: CloudReceiver, control_dir: str | None, name: str | None, listen: str | None
) -> Services:
    """Start the control socket and the status server of a bound receiver."""
    out = Services()
    assert receiver.endpoint is not None
    name = name or default_name(receiver.endpoint)
    if control_dir is not None:
        out.control = ControlServer(receiver, control_dir, name, lambda: service.status())
    service = ReceiverService(receiver, name, out.control)
    try:
        if out.control is not None:
            await out.control.start()
        if listen is not None:
            out.http = StatusServer(listen, service.metrics, service.status, service.health)
            try:
                await out.http.start()
            except OSError as exc:
                raise ControlError(f"--status-listen {listen}: {exc}") from None
    except BaseException:
        await out.stop()
        raise
    return out


def parse_listen(text: str) -> str:
    """argparse type of ``--status-listen``: HOST:PORT with a port number."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9101)")
    return text


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gateway cloud`` on the CLI's subparsers."""
    s = sub.add_parser("cloud", help="run the cloud receiver (ROUTER + SQLite store + PUB fan-out)")
    s.add_argument(
        "--bind", default="tcp://127.0.0.1:7000", help="ROUTER endpoint gateways connect to"
    )
    s.add_argument("--pub", default="tcp://127.0.0.1:7001", help="PUB endpoint for subscribers")
    s.add_argument(
        "--db",
        default="var/cloud.db",
        help="SQLite store file, or a PostgreSQL URL (postgresql://user@host/dbname) that any "
        "number of receivers share",
    )
    s.add_argument(
        "--partition",
        choices=("day", "hour"),
        default="day",
        help="PostgreSQL: partition size of records/points (fixed when the database is created)",
    )
    s.add_argument(
        "--retention-days",
        type=float,
        default=None,
        help="PostgreSQL: drop whole partitions older than this many days (default: keep all)",
    )
    s.add_argument(
        "--no-points",
        dest="points",
        action="store_false",
        help="PostgreSQL: store records only, no decoded rows in points/point_samples",
    )
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
    s.add_argument(
        "--control-dir",
        default="var/cloud/control",
        help="directory of the receivers' control sockets (`gateway command`); '' = none",
    )
    s.add_argument(
        "--name", default=None, help="this receiver's name (default: from --bind's address)"
    )
    s.add_argument(
        "--status-listen",
        type=parse_listen,
        default=None,
        metavar="HOST:PORT",
        help="serve /metrics, /health and /status (JSON per gateway) here",
    )
    s.set_defaults(fn=cmd_cloud)


def cmd_cloud(args: argparse.Namespace) -> int:
    from gateway.cli import run_until_signal
    from gateway.uplink import keys

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
    retention = None
    if args.retention_days is not None:
        if not args.retention_days > 0 or not is_postgres(args.db):
            print(
                "gateway cloud: --retention-days takes a number of days > 0 and a PostgreSQL "
                "--db (an SQLite store keeps everything)",
                file=sys.stderr,
            )
            return 2
        retention = args.retention_days * 86400.0
    if is_postgres(args.db):
        why = _postgres_unusable()
        if why:
            print(f"gateway cloud: --db {redacted(args.db)}: {why}", file=sys.stderr)
            return 2
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    try:
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
                control_dir=args.control_dir or None,
                name=args.name,
                status_listen=args.status_listen,
                partition=args.partition,
                retention=retention,
                points=args.points,
            )
        )
    except ControlError as exc:
        print(f"gateway cloud: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:  # a mistyped or busy endpoint: which, and what one looks like
        print(
            f"gateway cloud: --bind {args.bind} / --pub {args.pub}: {exc} "
            "(endpoints like tcp://127.0.0.1:7000; a port in use: choose another)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # the database: unreachable, refused, or a schema it cannot use
        if not is_postgres(args.db):
            raise
        print(f"gateway cloud: --db {redacted(args.db)}: {_db_error(exc)}", file=sys.stderr)
        return 2
    return 0


def _postgres_unusable() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return (
            "PostgreSQL needs psycopg: pip install -r packaging/cloud-requirements.txt "
            "(psycopg and psycopg-binary)"
        )
    return None


def _db_error(exc: BaseException) -> str:
    from gateway.cloud.pg_schema import SchemaError

    if isinstance(exc, SchemaError):
        return str(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return (
        f"cannot use the database: {text} (is the server up, the URL right, the database "
        "created, e.g. `createdb gateway_cloud`, and the user allowed to create tables?)"
    )
