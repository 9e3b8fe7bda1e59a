"""The cloud store file deleted or replaced while the receiver runs: nothing is acknowledged from
the lost file, a new store takes over, the loss is announced (gap rows, alarm) and the gateway's
point model is asked for again. Real receiver, real uplink, real SQLite files."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import replace
from pathlib import Path

import pytest
from uplink_support import bounded, demo_config, run, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.config import UplinkConfig
from gateway.core.records import decode
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory, demo_factory
from gateway.uplink.client import Uplink


def _acked(up: Uplink) -> int:
    streams: dict[str, dict[str, int]] = up.stats()["streams"]  # type: ignore[assignment]
    return streams.get("s", {}).get("acked_hw", 0)


def _unlink_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _replace_store(path: Path) -> None:
    """An operator "restores" an empty store over the live one (rename over the path)."""
    other = path.with_name("restored.db")
    with SQLiteCloudStore(other):
        pass
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(other, path)


def test_store_detects_deletion_before_answering(tmp_path: Path) -> None:
    from gateway.cloud.store import StoreReplaced

    path = tmp_path / "cloud.db"
    with SQLiteCloudStore(path) as s:
        s.commit("g", "s", 1, 1, [b"a"])
        _unlink_store(path)
        with pytest.raises(StoreReplaced, match="deleted"):
            s.hw("g", "s", 1)
        with pytest.raises(StoreReplaced):
            s.commit("g", "s", 1, 2, [b"b"])
        lost = s.reopen()
        assert [(x.gateway, x.stream, x.epoch, x.hw) for x in lost] == [("g", "s", 1, 1)]
        assert s.hw("g", "s", 1) == 0  # the new file
        assert [p.name for p in tmp_path.glob("cloud.db.lost-*")]  # the old content, saved


@pytest.mark.parametrize("damage", [_unlink_store, _replace_store], ids=["deleted", "replaced"])
def test_receiver_stops_acking_into_a_lost_store_and_announces_the_loss(
    tmp_path: Path, damage
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cloud.db"
    store = SQLiteCloudStore(path)

    async def scenario() -> None:
        async with running_receiver(store) as rx:
            assert rx.endpoint
            config = replace(
                UplinkConfig(),
                endpoints=(rx.endpoint,),
                queue=str(tmp_path / "q.db"),
                insecure=True,
                batch_max_delay=0.005,
                ack_timeout=0.5,
            )
            up = Uplink(config, "gw")
            await up.start()
            try:
                for i in range(50):
                    up.submit("s", b"%d" % i)
                await wait_until(lambda: _acked(up) == 50, "50 acked")
                epoch = up.stats()["streams"]["s"]["epoch"]
                damage(path)
                for i in range(50, 100):
                    up.submit("s", b"%d" % i)
                await wait_until(lambda: _acked(up) == 100, "100 acked")
                counters = rx.counters()
            finally:
                await bounded(up.stop(), "uplink stop")
        with SQLiteCloudStore(path) as s:  # the file now at the path holds what was acked
            recs = s.records("gw", "s", epoch)
            assert [r.seq for r in recs] == list(range(51, 101))
            assert [r.payload for r in recs] == [b"%d" % i for i in range(50, 100)]
            gaps = s.gaps("gw", "s", epoch)
            assert [(g.first, g.last, g.reason) for g in gaps] == [(1, 50, "store_lost")]
            assert [a.kind for a in s.alarms()] == ["store_replaced"]
            assert "50 acknowledged seqs" in s.alarms()[0].detail
        assert counters["store_replaced"] == 1 and counters["store_lost_seqs"] == 50

    run(scenario(), timeout=30)


def test_runtime_resends_its_point_model_to_a_store_that_lost_it(tmp_path: Path) -> None:
    path = tmp_path / "cloud.db"

    async def main() -> None:
        specs = [dataclasses.replace(s, port=0) for s in demo_factory()]
        store = SQLiteCloudStore(path)
        async with Factory(specs) as factory, running_receiver(store) as rx:
            config = demo_config(tmp_path, factory.ports, rx.endpoint, tmp_path / "q.db")
            runtime = Runtime(config)
            stop = asyncio.Event()
            task = asyncio.create_task(runtime.run(stop))

            def models() -> list[str]:
                return [decode(r.payload)["model"] for r in store.records("demo-gw", "meta")]

            try:
                # acknowledged, not only stored: a record stored but not yet acknowledged when
                # the store goes is resent by the gateway (no gap), one acknowledged is a gap
                await wait_until(
                    lambda: (
                        len(models()) >= 1
                        and runtime.uplink.stats()["streams"]["meta"]["acked_hw"] >= 1
                    ),
                    "the point model in the store, acknowledged",
                    15,
                )
                first = models()[0]
                _unlink_store(path)
                await wait_until(
                    lambda: rx.counters().get("store_replaced") == 1 and models() == [first],
                    "the point model again, in the new store",
                    15,
                )
                assert store.gaps("demo-gw", "meta", runtime.uplink.stats()["streams"]["meta"][
                    "epoch"])[0].reason == "store_lost"  # fmt: skip
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)

    asyncio.run(asyncio.wait_for(main(), 60))
