"""Subscriber: consume the cloud receiver's PUB fan-out, optionally gap-free from the store.

PUB/SUB drops messages when a subscriber is slow or (re)joins late; every record carries its
(gateway, stream, epoch, seq), so this helper detects such holes. Without a store it reports them
(``gaps`` counter and ``on_gap`` callback). With a store it follows ZeroMQ's Clone pattern:
subscribe first, then read a snapshot of what is already committed, then deliver live records,
skipping what the snapshot delivered and filling any hole from the store (PUB only carries
committed records, so the store always has what the socket lost). Deliberate gaps (the gateway's
DROP) are not holes: they arrive as notices, are counted (``dropped``) and go to ``on_drop``.

Across receivers: one SUB socket connects to every receiver's PUB (a gateway may be on any of
them, or move during a failover), and each (gateway, stream, epoch, seq) is delivered once, in
order: a record at or below the last one delivered is dropped whichever socket brings it. With
a store shared by the receivers, a record that comes late from one receiver while another's
newer ones came first was already filled from the store. And because a lost tail has no later
record to reveal it (a receiver killed with records in its PUB queue, then silence), a
subscriber with a store compares its positions with the store whenever nothing has arrived for
``resync`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgpack
import zmq
import zmq.asyncio

from gateway.cloud.catchup import ReaderError, StoreReader, open_reader
from gateway.cloud.store import is_postgres
from gateway.uplink import wire
from gateway.uplink.recordjson import (
    ModelLookup,
    PointNames,
    dumps,
    sample_lines,
    shown,
    store_lookup,
)


@dataclass(frozen=True, slots=True)
class Record:
    gateway: str
    stream: str
    epoch: int
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Gap:
    """Records ``first``..``last`` of (gateway, stream, epoch) were not received."""

    gateway: str
    stream: str
    epoch: int
    first: int
    last: int


class Subscriber:
    """SUB socket with a topic prefix filter (``"gw1/"``, ``"gw1/events"`` or ``""`` for all).

    ``connect``: one PUB endpoint or several (every receiver's). Without ``store``, the first
    record seen of a (gateway, stream, epoch) sets the baseline: records published before this
    subscriber joined are not reported as a gap. With ``store`` (an open
    :class:`~gateway.cloud.store.StoreReader`, e.g. ``SQLiteCloudStore`` on the receivers'
    file), holes are filled from it, the store is checked after ``resync`` seconds without a
    message, and ``snapshot=True`` first delivers everything already stored for the topic.
    """

    def __init__(
        self,
        connect: str | Sequence[str],
        topic: str = "",
        on_gap: Callable[[Gap], None] | None = None,
        *,
        store: StoreReader | None = None,
        snapshot: bool = False,
        on_drop: Callable[[Gap], None] | None = None,
        resync: float = 2.0,
    ) -> None:
        if snapshot and store is None:
            raise ValueError("snapshot=True needs a store")
        endpoints = [connect] if isinstance(connect, str) else list(connect)
        if not endpoints:
            raise ValueError("connect needs at least one PUB endpoint")
        self._sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for endpoint in endpoints:  # subscribe BEFORE the snapshot (Clone pattern)
            self._sock.connect(endpoint)
        self._resync = resync
        self._topic = topic
        self._on_gap = on_gap
        self._on_drop = on_drop
        self._store = store
        self._need_snapshot = self._snapshot_mode = snapshot
        self._ready: collections.deque[Record] = collections.deque()
        self._last: dict[tuple[str, str, int], int] = {}
        self.gaps = 0  # records missing and NOT recovered (no store)
        self.recovered = 0  # records fetched from the store to fill holes
        self.snapshot_records = 0
        self.dropped = 0  # seqs the gateway dropped on purpose (announced gaps)
        self.received = 0
        self.malformed = 0
        self.duplicates = 0  # records delivered already (another receiver, or the store)

    async def recv(self) -> Record:
        """The next record; malformed messages are counted and skipped."""
        if self._need_snapshot:
            self._need_snapshot = False
            await asyncio.to_thread(self._load_snapshot)
        while not self._ready:
            if self._store is not None and self._resync > 0:
                if not await self._sock.poll(int(self._resync * 1000)):
                    await self._catch_up()  # quiet: did the store get what the socket lost?
                    continue
            frames = await self._sock.recv_multipart()
            parsed = self._parse(frames)
            if parsed is None:
                self.malformed += 1
                continue
            record, gap = parsed
            if gap is not None:
                key = (record.gateway, record.stream, record.epoch)
                if gap.last <= self._last.get(key, 0):
                    continue  # already announced while filling a hole from the store
                if gap.first > 1 or key in self._last:
                    await self._track(dataclasses.replace(record, seq=gap.first))
                self._last[key] = gap.last
                self._announce_drop(gap)
                continue
            if await self._track(record):
                self._ready.append(record)
        self.received += 1
        return self._ready.popleft()

    async def _catch_up(self) -> None:
        """Deliver what the store holds beyond the positions reached (a lost tail)."""
        assert self._store is not None
        streams = await asyncio.to_thread(self._store.gateways)
        for st in streams:
            key = (st.gateway, st.stream, st.epoch)
            last = self._last.get(key)
            if last is None and not self._snapshot_mode:
                continue  # not followed yet: its first live record sets the baseline
            if not f"{st.gateway}/{st.stream}".startswith(self._topic):
                continue
            last = last or 0
            if st.hw > last:
                missing = await self._recover(key, last, st.hw)
                if missing > 0:  # rows gone from the store (retention): say so
                    self.gaps += missing
                    if self._on_gap is not None:
                        self._on_gap(Gap(*key, last + 1, st.hw))
                self._last[key] = st.hw

    async def _recover(self, key: tuple[str, str, int], last: int, upto: int) -> int:
        """Queue stored records last+1..upto of ``key`` and announce the stored drops among
        them; returns how many seqs neither covers."""
        assert self._store is not None
        found = await asyncio.to_thread(self._fill, key, last, upto)
        drops = await asyncio.to_thread(self._store.gaps, *key)
        announced = 0
        for g in drops:
            if g.last > last and g.first <= upto:
                first, end = max(g.first, last + 1), min(g.last, upto)
                announced += end - first + 1
                self._announce_drop(Gap(*key, first, end))
        return (upto - last) - found - announced

    def _load_snapshot(self) -> None:
        assert self._store is not None
        for st in self._store.gateways():
            if not f"{st.gateway}/{st.stream}".startswith(self._topic):
                continue
            key = (st.gateway, st.stream, st.epoch)
            self._fill(key, 0, st.hw, snapshot=True)
            self._last[key] = max(self._last.get(key, 0), st.hw)

    def _fill(
        self, key: tuple[str, str, int], after: int, upto: int, snapshot: bool = False
    ) -> int:
        """Queue stored records after..upto of ``key`` in order; returns how many were found."""
        assert self._store is not None
        gw, stream, epoch = key
        found = 0
        seq = after
        while seq < upto:
            batch = self._store.records(gw, stream, epoch, seq, min(10_000, upto - seq))
            batch = [r for r in batch if r.seq <= upto]
            if not batch:
                break
            for r in batch:
                self._ready.append(Record(gw, stream, epoch, r.seq, r.payload))
            found += len(batch)
            seq = batch[-1].seq
        if snapshot:
            self.snapshot_records += found
        else:
            self.recovered += found
        return found

    async def _track(self, rec: Record) -> bool:
        """Update the per-key position; False if ``rec`` is old (already delivered)."""
        key = (rec.gateway, rec.stream, rec.epoch)
        last = self._last.get(key)
        if last is not None and rec.seq <= last:
            self.duplicates += 1
            return False
        if last is None and self._snapshot_mode and rec.seq > 1:
            last = 0  # a stream born after the snapshot: catch up from its start
        if last is not None and rec.seq > last + 1:
            missing = rec.seq - last - 1
            if self._store is not None:
                missing = await self._recover(key, last, rec.seq - 1)
            if missing > 0:
                self.gaps += missing
                if self._on_gap is not None:
                    self._on_gap(Gap(rec.gateway, rec.stream, rec.epoch, last + 1, rec.seq - 1))
        self._last[key] = rec.seq
        return True

    def _announce_drop(self, gap: Gap) -> None:
        self.dropped += gap.last - gap.first + 1
        if self._on_drop is not None:
            self._on_drop(gap)

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Record:
        return await self.recv()

    def _parse(self, frames: list[bytes]) -> tuple[Record, Gap | None] | None:
        if len(frames) != 3:
            return None
        try:
            header = msgpack.unpackb(frames[1], raw=False)
        except Exception:
            return None
        if not isinstance(header, dict) or header.get("v") != wire.PROTOCOL_VERSION:
            return None
        gw, stream, epoch, seq = (header.get(k) for k in ("gateway", "stream", "epoch", "seq"))
        if not (isinstance(gw, str) and isinstance(stream, str)):
            return None
        if not (isinstance(epoch, int) and isinstance(seq, int)):
            return None
        rec = Record(gw, stream, epoch, seq, bytes(frames[2]))
        drop = header.get("gap")
        if drop is None:
            return rec, None
        if not (isinstance(drop, list) and len(drop) == 3 and isinstance(drop[0], int)):
            return None
        return rec, Gap(gw, stream, epoch, drop[0], seq)

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def run_subscribe(
    connect: str | Sequence[str],
    topic: str = "",
    stop: asyncio.Event | None = None,
    names: PointNames | None = None,
    samples: bool = True,
    *,
    store: StoreReader | None = None,
    snapshot: bool = False,
) -> None:
    """Print what the cloud publishes as JSON lines until ``stop`` is set — ``gateway subscribe``.

    ``samples``: one line per telemetry sample, named and with its unit, ``{"gateway",
    "stream", "seq", "model", "asset", "path", "point", "unit", "ts", "value", "quality"}``
    (resolved against the model version the record was written under); other records as
    below. Else one line per record: ``{"gateway", "stream", "epoch", "seq", "record"}``,
    telemetry with point names (:mod:`gateway.uplink.recordjson`). Holes in the sequence and
    the gateways' deliberate drops go to stderr. ``store``: fill holes from it (and
    ``snapshot``: start with everything it holds)."""

    def report(gap: Gap) -> None:
        print(
            f"GAP {gap.gateway}/{gap.stream} epoch {gap.epoch}: {gap.first}..{gap.last} missing",
            file=sys.stderr,
            flush=True,
        )

    def dropped(gap: Gap) -> None:
        print(
            f"DROPPED {gap.gateway}/{gap.stream} epoch {gap.epoch}: {gap.first}..{gap.last} "
            "dropped by the gateway",
            file=sys.stderr,
            flush=True,
        )

    names = names or PointNames()
    stop = stop or asyncio.Event()
    with Subscriber(
        connect, topic, on_gap=report, store=store, snapshot=snapshot, on_drop=dropped
    ) as sub:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(sub.recv())
                await asyncio.wait({nxt, stopper}, return_when="FIRST_COMPLETED")
                if not nxt.done():
                    nxt.cancel()
                    break
                rec = nxt.result()
                lines = (
                    sample_lines(rec.stream, rec.gateway, rec.seq, rec.payload, names)
                    if samples
                    else None
                )
                if lines is not None:
                    print("\n".join(dumps(x) for x in lines), flush=True)
                    continue
                line = {
                    "gateway": rec.gateway,
                    "stream": rec.stream,
                    "epoch": rec.epoch,
                    "seq": rec.seq,
                    "record": shown(rec.stream, rec.gateway, rec.payload, names),
                }
                print(dumps(line), flush=True)
        finally:
            stopper.cancel()


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gateway subscribe`` on the CLI's subparsers."""
    s = sub.add_parser(
        "subscribe", help="print the records the cloud publishes, one JSON object per line"
    )
    s.add_argument(
        "--connect",
        action="append",
        default=None,
        help="a receiver's PUB endpoint; repeat it for every receiver "
        "(default: tcp://127.0.0.1:7001)",
    )
    s.add_argument("--topic", default="", help="topic prefix, e.g. 'demo-gw/events'")
    s.add_argument(
        "--db",
        default="var/cloud.db",
        help="the receivers' store, an SQLite file or a postgresql:// URL (read-only): point "
        "names of gateways started before this, and what --catch-up reads",
    )
    s.add_argument(
        "--catch-up",
        action="store_true",
        help="fill holes (late join, a receiver gone, a slow subscriber) from --db: every "
        "record once, in order",
    )
    s.add_argument(
        "--snapshot",
        action="store_true",
        help="start with every record already in --db, then live (implies --catch-up)",
    )
    s.add_argument(
        "--records",
        action="store_true",
        help="one line per record (telemetry as columns of samples) instead of one per sample",
    )
    s.set_defaults(fn=cmd_subscribe)


def cmd_subscribe(args: argparse.Namespace) -> int:
    from gateway.cli import run_until_signal

    if is_postgres(args.db):
        from gateway.cloud.store_pg import meta_lookup

        lookup: ModelLookup = meta_lookup(args.db)
    else:
        lookup = store_lookup(args.db)
    names = PointNames(lookup, hint=f" on the PUB socket nor in --db {args.db}")
    connect = args.connect or ["tcp://127.0.0.1:7001"]
    store: StoreReader | None = None
    if args.catch_up or args.snapshot:
        try:
            store = open_reader(args.db)
        except ReaderError as exc:
            print(f"gateway subscribe: {exc}", file=sys.stderr)
            return 2
    try:
        run_until_signal(
            lambda stop: run_subscribe(
                connect,
                args.topic,
                stop,
                names,
                not args.records,
                store=store,
                snapshot=args.snapshot,
            )
        )
    except zmq.ZMQError as exc:  # a mistyped endpoint: say which and what one looks like
        print(f"gateway subscribe: --connect: {exc} (e.g. tcp://127.0.0.1:7001)", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()
    return 0
