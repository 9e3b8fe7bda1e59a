"""The cloud side at scale and for consumers: Clone-pattern catch-up, hole filling from the store,
announced drops, and 50 CurveZMQ gateways at once on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio
from pg_support import StoreMaker
from uplink_support import bounded, run, running_receiver, wait_until

from gateway.cloud.subscriber import Gap, Record, Subscriber
from gateway.config import UplinkConfig
from gateway.uplink import keys, wire
from gateway.uplink.client import Uplink


def _insecure(tmp_path: Path, endpoint: str, name: str) -> UplinkConfig:
    return UplinkConfig(
        endpoints=(endpoint,),
        queue=str(tmp_path / f"{name}.db"),
        batch_max_delay=0.002,
        ack_timeout=2.0,
        insecure=True,
    )


async def _take(sub: Subscriber, n: int) -> list[Record]:
    return [await bounded(sub.recv(), f"record {i + 1} of {n}") for i in range(n)]


def test_snapshot_then_live_without_loss_or_duplicates(
    tmp_path: Path, make_store: StoreMaker
) -> None:
    async def scenario() -> None:
        store = make_store("c.db")
        async with running_receiver(store) as rx:
            assert rx.endpoint and rx.pub_endpoint
            up = Uplink(_insecure(tmp_path, rx.endpoint, "gw"), "gw")
            await up.start()
            try:
                for i in range(300):
                    up.submit("s", b"%d" % i)
                await wait_until(lambda: rx.status().get("gw", {}).get("records") == 300, "300")
                reader = make_store("c.db")
                reader.open()
                with Subscriber(rx.pub_endpoint, "gw/", store=reader, snapshot=True) as sub:
                    first = await _take(sub, 300)  # the snapshot (nothing live yet)
                    assert sub.snapshot_records == 300
                    for i in range(300, 600):
                        up.submit("s", b"%d" % i)
                    rest = await _take(sub, 300)  # live, or filled from the store
                    got = first + rest
                    assert [r.payload for r in got] == [b"%d" % i for i in range(600)]
                    assert [r.seq for r in got] == list(range(1, 601))
                    assert sub.gaps == 0
                reader.close()
            finally:
                await bounded(up.stop(), "uplink stop")

    run(scenario())


def test_holes_are_filled_from_the_store_and_drops_announced(make_store: StoreMaker) -> None:
    async def scenario() -> None:
        with make_store("c.db") as store:
            store.commit("gw", "s", 3, 1, [b"a", b"b", b"c", b"d"])
            store.drop("gw", "s", 3, 5, 7, "quota")
            store.commit("gw", "s", 3, 8, [b"h"])
            pub = zmq.asyncio.Context.instance().socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.bind("tcp://127.0.0.1:*")
            endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)

            async def publish(seq: int, payload: bytes, **extra: object) -> None:
                header = {
                    "v": wire.PROTOCOL_VERSION,
                    "gateway": "gw",
                    "stream": "s",
                    "epoch": 3,
                    "seq": seq,
                    **extra,
                }
                await pub.send_multipart([b"gw/s", msgpack.packb(header), payload])

            drops: list[Gap] = []
            try:
                with Subscriber(endpoint, "gw/", store=store, on_drop=drops.append) as sub:

                    async def joined() -> Record:  # PUB/SUB joins asynchronously
                        while True:
                            await publish(1, b"a")
                            try:
                                return await asyncio.wait_for(sub.recv(), 0.05)
                            except TimeoutError:
                                continue

                    assert (await bounded(joined(), "join")).seq == 1
                    await publish(4, b"d")  # 2 and 3 were "lost" on the socket
                    assert [r.payload for r in await _take(sub, 3)] == [b"b", b"c", b"d"]
                    assert sub.recovered == 2 and sub.gaps == 0
                    await publish(7, b"", gap=[5, 7, "quota"])
                    await publish(8, b"h")
                    assert (await bounded(sub.recv(), "after the drop")).payload == b"h"
                    assert drops == [Gap("gw", "s", 3, 5, 7)] and sub.dropped == 3
                    await publish(8, b"h")  # a late duplicate is not delivered again
                    await publish(9, b"i")
                    with_store = await bounded(sub.recv(), "seq 9")
                    assert with_store.seq == 9
            finally:
                pub.close(linger=0)

    run(scenario())


def test_fifty_secure_gateways_at_once(tmp_path: Path, make_store: StoreMaker) -> None:
    n_gw, per_stream = 50, 200
    cloud = keys.create(tmp_path / "cloud", "cloud")
    names = [f"gw{i:02d}" for i in range(n_gw)]
    for name in names:
        keys.create(tmp_path / "gw", name)
        keys.allow(tmp_path / "gw" / f"{name}.key", tmp_path / "allowed")

    async def scenario() -> None:
        store = make_store("c.db")
        allow = keys.AllowList(tmp_path / "allowed")
        async with running_receiver(store, pub_bind=None, server_key=cloud, allow=allow) as rx:
            assert rx.endpoint and len(allow) == n_gw
            ups = [
                Uplink(
                    UplinkConfig(
                        endpoints=(rx.endpoint,),
                        queue=str(tmp_path / f"{name}.db"),
                        batch_max_delay=0.01,
                        ack_timeout=5.0,
                        server_key=str(tmp_path / "cloud" / "cloud.key"),
                        key_dir=str(tmp_path / "gw"),
                    ),
                    name,
                )
                for name in names
            ]
            await asyncio.gather(*(u.start() for u in ups))
            try:
                for i in range(per_stream):
                    for u in ups:
                        u.submit("telemetry", b"%s:%d" % (u.gateway_id.encode(), i))
                        if i % 20 == 0:
                            u.submit("events", b"e%d" % i)
                    if i % 50 == 0:
                        await asyncio.sleep(0)

                def done() -> bool:
                    st = rx.status()
                    return len(st) == n_gw and all(
                        v["records"] == per_stream + per_stream // 20 for v in st.values()
                    )

                await wait_until(done, "every record of 50 gateways", timeout=60)
                assert all(v["connected"] and v["duplicates"] == 0 for v in rx.status().values())
                assert rx.counters()["auth_accepted"] >= n_gw
            finally:
                await asyncio.gather(*(bounded(u.stop(), "stop") for u in ups))
        with make_store("c.db") as s:
            for name in names[:: n_gw // 5]:
                recs = s.records(name, "telemetry", limit=10_000)
                assert [r.payload for r in recs] == [
                    b"%s:%d" % (name.encode(), i) for i in range(per_stream)
                ]

    run(scenario(), timeout=120)


def test_gateway_cloud_without_status_lines_idles(tmp_path: Path) -> None:
    """``--status-interval 0`` (no status lines) once spun the receiver's loop on a whole core."""
    import subprocess
    import sys
    import time

    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "cloud", "--insecure", "--bind",
         "tcp://127.0.0.1:0", "--pub", "", "--db", str(tmp_path / "c.db"),
         "--status-interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        p = psutil.Process(proc.pid)
        deadline = time.monotonic() + 20
        while not (tmp_path / "c.db").exists():  # the store is open: start-up is over
            assert proc.poll() is None, "gateway cloud exited at start"
            assert time.monotonic() < deadline, "gateway cloud did not open its store in 20 s"
            time.sleep(0.1)
        time.sleep(0.5)
        before, t0 = sum(p.cpu_times()[:2]), time.monotonic()
        time.sleep(2.0)
        used, wall = sum(p.cpu_times()[:2]) - before, time.monotonic() - t0
        assert used < 0.25 * wall, f"an idle receiver used {used:.2f} s of CPU in {wall:.1f} s"
    finally:
        proc.terminate()
        proc.wait(10)
