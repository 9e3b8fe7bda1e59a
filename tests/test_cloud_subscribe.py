"""Subscribers across receivers: one SUB connected to every receiver's PUB, each record once and
in order, and what the socket lost caught up from the shared store (Clone pattern). Real
receivers on one SQLite store file, a real uplink that fails over between them, real ZeroMQ;
`gateway subscribe` as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from pg_support import StoreMaker
from uplink_support import bounded, run, wait_until

from gateway.cloud.catchup import open_reader
from gateway.cloud.receiver import CloudReceiver
from gateway.cloud.store import CloudStore, SQLiteCloudStore
from gateway.cloud.subscriber import Record, Subscriber
from gateway.config import UplinkConfig
from gateway.uplink.client import Uplink

ROOT = Path(__file__).resolve().parent.parent


class Rx:
    """A receiver on the shared store that a test can stop in the middle."""

    def __init__(self, store: CloudStore, pub: bool = True) -> None:
        self.stop = asyncio.Event()
        self.rx = CloudReceiver("tcp://127.0.0.1:0", "tcp://127.0.0.1:0" if pub else None, store)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Rx:
        self.task = asyncio.create_task(self.rx.run(self.stop))
        await bounded(self.rx.ready.wait(), "receiver bind")
        return self

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await bounded(self.task, "receiver shutdown")

    @property
    def endpoint(self) -> str:
        assert self.rx.endpoint is not None
        return self.rx.endpoint

    @property
    def pub(self) -> str:
        assert self.rx.pub_endpoint is not None
        return self.rx.pub_endpoint


@contextlib.asynccontextmanager
async def fleet(
    tmp_path: Path, pubs: tuple[bool, bool] = (True, True), stores: StoreMaker | None = None
) -> AsyncIterator[tuple[Rx, Rx, Uplink]]:
    """Two receivers on one store (an SQLite file, or ``stores``'s), and a gateway's uplink
    listing both (rx1 first)."""

    def store() -> CloudStore:
        return SQLiteCloudStore(tmp_path / "cloud.db") if stores is None else stores()

    rx1, rx2 = await Rx(store(), pubs[0]).start(), await Rx(store(), pubs[1]).start()
    up = Uplink(
        UplinkConfig(
            endpoints=(rx1.endpoint, rx2.endpoint),
            queue=str(tmp_path / "queue.db"),
            batch_max_records=50,
            batch_max_delay=0.002,
            ack_timeout=1.0,
            insecure=True,
        ),
        "gw",
    )
    await up.start()
    try:
        yield rx1, rx2, up
    finally:
        await bounded(up.stop(), "uplink stop")
        await rx1.close()
        await rx2.close()


def _acked(up: Uplink, n: int) -> bool:
    streams = up.stats()["streams"]
    assert isinstance(streams, dict)
    return "s" in streams and streams["s"]["acked_hw"] >= n


async def _take(sub: Subscriber, n: int, timeout: float = 15.0) -> list[Record]:
    return [await bounded(sub.recv(), f"record {i + 1} of {n}", timeout) for i in range(n)]


def _series(n: int) -> list[bytes]:
    return [b"%d" % i for i in range(n)]


def test_late_joiner_and_failover_each_record_once_in_order(
    tmp_path: Path, make_store: StoreMaker
) -> None:
    async def main() -> None:
        async with fleet(tmp_path, stores=make_store) as (rx1, rx2, up):
            reader = open_reader(make_store.location())
            try:
                for i in range(200):
                    up.submit("s", b"%d" % i)
                await wait_until(lambda: _acked(up, 200), "200 records acked via rx1")
                # Joins late, connected to both receivers: the snapshot, then live.
                with Subscriber([rx1.pub, rx2.pub], "gw/", store=reader, snapshot=True) as sub:
                    first = await _take(sub, 200)
                    assert sub.snapshot_records == 200
                    await rx1.close()  # the gateway fails over to rx2 mid-stream
                    for i in range(200, 500):
                        up.submit("s", b"%d" % i)
                    rest = await _take(sub, 300)
                    got = first + rest
                    assert [r.payload for r in got] == _series(500)
                    assert [r.seq for r in got] == list(range(1, 501))
                    assert sub.gaps == 0
                    assert rx2.rx.status()["gw"]["records"] > 0, "rx2 never took over"
                    await asyncio.sleep(0.3)  # nothing more may come: no duplicate deliveries
                    extra = asyncio.ensure_future(sub.recv())
                    await asyncio.sleep(0.3)
                    assert not extra.done(), f"delivered twice: {extra.result()}"
                    extra.cancel()
            finally:
                reader.close()

    run(main(), timeout=60)


def test_cut_off_mid_stream_catches_up_the_tail_from_the_store(
    tmp_path: Path, make_store: StoreMaker
) -> None:
    """The subscriber reaches rx1's PUB only; mid-stream the gateway moves to rx2, whose records
    never reach it live and no later record reveals the hole: it catches up from the store."""

    async def main() -> None:
        async with fleet(tmp_path, stores=make_store) as (rx1, rx2, up):
            reader = open_reader(make_store.location())
            try:
                with Subscriber(rx1.pub, "gw/", store=reader, resync=0.3) as sub:
                    n_warm = 0
                    while True:  # PUB/SUB joins asynchronously: warm up until one arrives
                        up.submit("s", b"w")
                        n_warm += 1
                        assert n_warm < 200, "the subscriber never joined rx1's PUB"
                        with contextlib.suppress(AssertionError):
                            warm = await bounded(sub.recv(), "a warm-up record", 0.2)
                            break
                    got = [warm]
                    for i in range(100):
                        up.submit("s", b"%d" % i)
                    got += await _take(sub, 100 + n_warm - warm.seq)
                    await rx1.close()  # cut off: the rest goes through rx2 only
                    for i in range(100, 300):
                        up.submit("s", b"%d" % i)
                    await wait_until(lambda: _acked(up, n_warm + 300), "all acked via rx2", 15)
                    got += await _take(sub, 200)
                    assert [r.seq for r in got] == list(range(warm.seq, n_warm + 301))
                    assert [r.payload for r in got[-300:]] == _series(300)
                    assert sub.gaps == 0 and sub.recovered >= 200
            finally:
                reader.close()

    run(main(), timeout=60)


def test_gateway_subscribe_cli_connects_to_every_receiver(tmp_path: Path) -> None:
    async def main() -> None:
        async with fleet(tmp_path) as (rx1, rx2, up):
            for i in range(100):
                up.submit("s", b"%d" % i)
            await wait_until(lambda: _acked(up, 100), "100 records acked")
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "subscribe", "--connect", rx1.pub,
                 "--connect", rx2.pub, "--db", str(tmp_path / "cloud.db"), "--snapshot",
                 "--topic", "gw/"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            )  # fmt: skip
            lines: list[dict[str, object]] = []

            def pump() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(json.loads(line))

            threading.Thread(target=pump, daemon=True).start()
            try:
                await wait_until(lambda: len(lines) >= 100, "the snapshot on stdout", 20)
                await rx1.close()
                for i in range(100, 250):
                    up.submit("s", b"%d" % i)
                await wait_until(lambda: len(lines) >= 250, "250 records on stdout", 20)
                await asyncio.sleep(0.5)
            finally:
                proc.terminate()
                _, err = proc.communicate(timeout=10)
            assert [line["seq"] for line in lines] == list(range(1, 251)), err
            assert {line["gateway"] for line in lines} == {"gw"}
            assert "GAP" not in err

    run(main(), timeout=60)


def test_subscribe_cli_bad_store_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "gateway", "subscribe", "--catch-up", "--db",
         str(tmp_path / "none.db")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res
    assert "no cloud store there" in res.stderr
