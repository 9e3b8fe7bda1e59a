"""OPC UA stacks side by side: asyncua vs o6, each its own server and its plain client.

For each stack and each N: the stack's own server (a process) holds N Double variables and
writes new values to all of them every 100 ms; the stack's plain client (another process)
subscribes to all N (publishing and sampling 100 ms, queue 1, no per-publish cap) with a no-op
handler that only counts. After a warm-up, over a window, the bench reads: value changes/s the
client received (N × 10/s is what the server offered), the client's CPU in % of one core and
RSS, and the server's CPU and achieved update rate (so it says which side limited the figure).

``--quick`` runs N=1000 only with a short window. o6 without a credential runs in its
ten-minute "Script Mode" (the process exits after ten minutes): each process here lives for
well under that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

PERIOD = 0.1  # server update period and client publishing/sampling interval, seconds
SCRIPT = __file__  # what Child runs; bench_opcua_e2e.py points it at itself


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(*parts: object) -> None:
    print(*parts, flush=True)


# -- asyncua ---------------------------------------------------------------------------------


async def asyncua_server(n: int, port: int) -> None:
    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    idx = await server.register_namespace("urn:bench")
    folder = await server.nodes.objects.add_object(idx, "Machine")
    nodes = [await folder.add_variable(ua.NodeId(f"v{i}", idx), f"v{i}", 0.0) for i in range(n)]
    ids = [node.nodeid for node in nodes]
    async with server:
        say("READY", idx)
        updates, k = 0, 0
        next_t = time.monotonic()
        while True:
            k += 1
            for i, nid in enumerate(ids):  # the server-side write path, without a Node per call
                await server.write_attribute_value(nid, ua.DataValue(ua.Variant(k + i * 0.5)))
                if i % 500 == 499:  # the writes never wait: let the publishing run in between
                    await asyncio.sleep(0)
            updates += n
            say("UPDATES", updates)
            next_t += PERIOD
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))


async def asyncua_client(n: int, port: int, ns: int) -> None:
    from asyncua import Client, ua

    count = 0

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            nonlocal count
            count += 1

    async with Client(f"opc.tcp://127.0.0.1:{port}/", timeout=60) as client:
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=PERIOD * 1000,
            RequestedLifetimeCount=10000,
            RequestedMaxKeepAliveCount=100,
            MaxNotificationsPerPublish=0,
        )
        sub = await client.create_subscription(params, Handler())
        nodes = [client.get_node(ua.NodeId(f"v{i}", ns)) for i in range(n)]
        await sub.subscribe_data_change(nodes, sampling_interval=PERIOD * 1000)
        say("SUBSCRIBED")
        while True:
            await asyncio.sleep(0.5)
            say("COUNT", count)


# -- o6 --------------------------------------------------------------------------------------


def o6_server(n: int, port: int) -> None:
    import o6

    server = o6.Server(port=port)
    nodes = [server.addVariable(f"v{i}", server.objectsNode, 0.0, nodeId=f"ns=1;s=v{i}")
             for i in range(n)]  # fmt: skip
    ids = [o6.NodeId(f"ns=1;s=v{i}") for i in range(n)]
    del nodes
    server.start()
    say("READY", 1)
    updates, k = 0, 0
    next_t = time.monotonic()
    while True:
        k += 1
        server.write(ids, [float(k + i * 0.5) for i in range(n)])
        updates += n
        say("UPDATES", updates)
        next_t += PERIOD
        time.sleep(max(0.0, next_t - time.monotonic()))


async def o6_client(n: int, port: int, ns: int) -> None:
    import o6

    count = 0

    def noop(value: Any) -> None:
        nonlocal count
        count += 1

    client = o6.Client(f"opc.tcp://127.0.0.1:{port}")
    await client.connect()
    sub = await client.createSubscription(PERIOD * 1000, maxKeepaliveCount=100,
                                          maxNotificationsPerPublish=0)  # fmt: skip
    # o6 sends one CreateMonitoredItems request per item: keep many in flight, or 10,000 items
    # take minutes to set up.
    ids = [f"ns={ns};s=v{i}" for i in range(n)]
    for at in range(0, n, 16):
        await asyncio.gather(*(client.monitor(nid, noop, PERIOD * 1000, subscription=sub)
                               for nid in ids[at : at + 16]))  # fmt: skip
    say("SUBSCRIBED")
    while True:
        await asyncio.sleep(0.5)
        say("COUNT", count)


# -- orchestration ---------------------------------------------------------------------------


class Child:
    """A role of this script in its own process; the last value of each reported key."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, SCRIPT, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)  # fmt: skip
        self.last: dict[str, list[str]] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            key, *rest = line.split() or [""]
            with self.cond:
                self.last[key] = rest
                self.cond.notify_all()

    def wait(self, key: str, timeout: float) -> list[str]:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.last or self.proc.poll() is not None,
                                      timeout):  # fmt: skip
                raise TimeoutError(f"{self.proc.args[2:]} said no {key} in {timeout:.0f}s")
            if key not in self.last:
                raise RuntimeError(f"{self.proc.args[2:]} exited {self.proc.returncode}")
            return self.last[key]

    def value(self, key: str) -> float:
        with self.cond:
            return float(self.last.get(key, ["0"])[0])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def cpu(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def run_one(stack: str, n: int, warmup: float, window: float) -> dict[str, float]:
    """``stack`` is a stack's name, or ``client@server`` to pair one's client with another's
    server (which tells a client's limit apart from its server's)."""
    import psutil

    port = str(free_port())
    stack, _, server_stack = stack.partition("@")
    server = Child("--role", "server", "--stack", server_stack or stack, "--n", str(n),
                   "--port", port)  # fmt: skip
    client = None
    try:
        ns = server.wait("READY", 300)[0]
        started = time.monotonic()
        client = Child("--role", "client", "--stack", stack, "--n", str(n), "--port", port,
                       "--ns", ns)  # fmt: skip
        client.wait("SUBSCRIBED", 540)
        setup = time.monotonic() - started
        time.sleep(warmup)
        cp, sp = psutil.Process(client.proc.pid), psutil.Process(server.proc.pid)
        c0, s0, t0 = cpu(cp), cpu(sp), time.monotonic()
        n0, u0 = client.value("COUNT"), server.value("UPDATES")
        time.sleep(window)
        c1, s1, t1 = cpu(cp), cpu(sp), time.monotonic()
        n1, u1 = client.value("COUNT"), server.value("UPDATES")
        wall = t1 - t0
        return {
            "offered": n / PERIOD,
            "served": (u1 - u0) / wall,
            "received": (n1 - n0) / wall,
            "client_cpu": 100 * (c1 - c0) / wall,
            "client_rss": cp.memory_info().rss / 2**20,
            "server_cpu": 100 * (s1 - s0) / wall,
            "setup": setup,
        }
    finally:
        if client is not None:
            client.stop()
        server.stop()


def add_role_arguments(ap: argparse.ArgumentParser) -> None:
    """The hidden arguments of a child process's role (Child passes them)."""
    ap.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    ap.add_argument("--stack", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ns", type=int, help=argparse.SUPPRESS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N=1000 only, short window")
    ap.add_argument("--sizes", default="1000,10000", help="variables per server, comma-separated")
    ap.add_argument("--stacks", default="asyncua,o6,asyncua@o6",
                    help="stacks, or client@server pairs")  # fmt: skip
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured")
    add_role_arguments(ap)
    args = ap.parse_args()
    if args.role:
        if args.stack == "asyncua":
            coro = (asyncua_server(args.n, args.port) if args.role == "server"
                    else asyncua_client(args.n, args.port, args.ns))  # fmt: skip
            asyncio.run(coro)
        elif args.role == "server":
            o6_server(args.n, args.port)
        else:
            asyncio.run(o6_client(args.n, args.port, args.ns))
        return
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    window, warmup = (3.0, 2.0) if args.quick else (args.window, 5.0)
    say(f"OPC UA stacks on loopback, {os.cpu_count()} CPUs; N Double variables changed every "
        f"{PERIOD * 1000:.0f} ms; {window:.0f} s window after {warmup:.0f} s warm-up")  # fmt: skip
    say(f"  {'stack':10s} {'N':>6s} {'offered/s':>10s} {'served/s':>10s} {'received/s':>11s} "
        f"{'client CPU%':>11s} {'client RSS MB':>13s} {'server CPU%':>11s} {'setup s':>7s}")  # fmt: skip
    results: dict[tuple[str, int], dict[str, float]] = {}
    for n in sizes:
        for stack in args.stacks.split(","):
            try:
                r = run_one(stack, n, warmup, window)
            except (TimeoutError, RuntimeError) as e:
                say(f"  {stack:10s} {n:6d} not measured: {e}")
                continue
            results[stack, n] = r
            say(f"  {stack:10s} {n:6d} {r['offered']:10,.0f} {r['served']:10,.0f} "
                f"{r['received']:11,.0f} {r['client_cpu']:11.1f} {r['client_rss']:13.1f} "
                f"{r['server_cpu']:11.1f} {r['setup']:7.1f}")  # fmt: skip
    for n in sizes:
        a, b = results.get(("asyncua", n)), results.get(("o6", n))
        if a and b and a["received"] and a["client_cpu"]:
            per_a = a["received"] / max(a["client_cpu"], 0.1)
            per_b = b["received"] / max(b["client_cpu"], 0.1)
            say(f"  ratio N={n}: o6 receives x{b['received'] / a['received']:.1f} the changes of "
                f"asyncua; x{per_b / per_a:.1f} per client CPU")  # fmt: skip


if __name__ == "__main__":
    main()
