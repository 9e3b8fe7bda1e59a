"""Simulated gateways for the cloud side's chaos run and ingest benchmark: lightweight clients
that speak the real uplink protocol (HELLO/WELCOME, DATA/ACK/NACK, CurveZMQ) to one of several
receivers and fail over to the next when one stops answering, like the real uplink client.

Each gateway sends a ``meta`` record (its point model) and then ``count`` telemetry records in
the real record format, ``points`` samples each; the first sample's value is the record's seq,
so a store can be checked for order and duplicates from the payloads alone. A gateway keeps its
epoch across reconnects (as a real gateway does with its durable queue), resends from the hw a
WELCOME or NACK names, and counts a record as delivered only once an ACK covers it.
"""

from __future__ import annotations

import asyncio
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio

from gateway.core.processes import ManagedProcess
from gateway.uplink import keys, wire

ROOT = Path(__file__).resolve().parents[1]

STREAM = "telemetry"
MODEL = "sim-model"


def meta_record(gateway: str, points: int) -> bytes:
    pts = [{"id": i, "name": f"p{i}", "device": "sim", "unit": "1"} for i in range(points)]
    return msgpack.packb({"v": 1, "kind": "point_model", "gateway": gateway, "model": MODEL,
                          "points": pts})  # fmt: skip


def telemetry_record(seq: int, points: int, t0: float) -> bytes:
    """Record ``seq``: ``points`` samples; sample 0's value is ``seq`` (the order check)."""
    ts = t0 + seq * 0.001
    return msgpack.packb({"v": 1, "model": MODEL, "id": list(range(points)), "ts": [ts] * points,
                          "x": [float(seq)] + [1.5] * (points - 1), "q": [0] * points})  # fmt: skip


def seq_of(payload: bytes) -> int:
    return int(msgpack.unpackb(payload)["x"][0])


@dataclass
class SimGateway:
    """One simulated gateway. ``endpoints`` in failover order; ``curve`` = (server public, own
    public, own secret) in Z85, or None for plaintext."""

    name: str
    endpoints: Sequence[str]
    curve: tuple[bytes, bytes, bytes] | None
    count: int
    points: int = 10
    batch: int = 50
    window: int = 4  # DATA messages in flight
    ack_timeout: float = 2.0
    rate: float | None = None  # records/s; None: as fast as ACKs allow
    epoch: int = 1
    same_payload: bool = False  # the bench: one record's bytes for every seq (less load-gen CPU)
    t0: float = field(default_factory=time.time)
    acked: int = 0
    meta_acked: bool = False
    reconnects: int = 0
    nacks: int = 0
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (since, s) without an ACK
    _which: int = 0
    _last_ack: float = 0.0
    _started: float = 0.0

    def _socket(self) -> zmq.asyncio.Socket:
        sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.curve[0])
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve[1])
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve[2])
        sock.connect(self.endpoints[self._which % len(self.endpoints)])
        return sock

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver everything (or until ``stop``), failing over on every silent receiver."""
        self._started = self._last_ack = time.monotonic()
        while self.acked < self.count or not self.meta_acked:
            if stop is not None and stop.is_set():
                return
            sock = self._socket()
            try:
                failed_over = await self._session(sock, stop)
            finally:
                sock.close(linger=0)
            if failed_over and not (stop is not None and stop.is_set()):
                self._which += 1
                self.reconnects += 1

    async def _recv(self, sock: zmq.asyncio.Socket) -> wire.Message | None:
        try:
            frames = await asyncio.wait_for(sock.recv_multipart(), self.ack_timeout)
        except TimeoutError:
            return None
        return wire.decode(frames)

    async def _session(self, sock: zmq.asyncio.Socket, stop: asyncio.Event | None) -> bool:
        """One connection; True when the receiver went silent (fail over). Checks ``stop``
        itself: a cancellation can be lost in ``asyncio.wait_for`` before Python 3.12."""
        await sock.send_multipart(
            wire.encode(wire.Hello(self.name, {"meta": 1, STREAM: self.epoch}))
        )
        msg = await self._recv(sock)
        while msg is not None and not isinstance(msg, wire.Welcome | wire.Error):
            msg = await self._recv(sock)  # a late ACK of the session before
        if not isinstance(msg, wire.Welcome):
            return True
        self._acked(msg.hw.get(STREAM, (self.epoch, 0))[1])
        if not self.meta_acked:
            if msg.hw.get("meta", (1, 0))[1] < 1:
                await sock.send_multipart(
                    wire.encode(
                        wire.Data.build("meta", 1, 1, [meta_record(self.name, self.points)])
                    )
                )
                reply = await self._recv(sock)
                while isinstance(reply, wire.Command):  # e.g. "send your point model": it is
                    reply = await self._recv(sock)
                if not isinstance(reply, wire.Ack):
                    return True
            self.meta_acked = True
        sent = self.acked  # highest seq sent in this session
        inflight = 0
        while self.acked < self.count:
            if stop is not None and stop.is_set():
                return False
            while inflight < self.window and sent < self.count:
                n = min(self.batch, self.count - sent)
                if self.rate is not None:  # pace: record k is due at k / rate
                    due = self._started + (sent + n) / self.rate
                    delay = due - time.monotonic()
                    if delay > 0 and inflight:
                        break
                    if delay > 0:
                        await asyncio.sleep(delay)
                if self.same_payload:
                    rec, crc = self._fixed()
                    recs, crcs = (rec,) * n, (crc,) * n
                else:
                    recs = tuple(telemetry_record(s, self.points, self.t0)
                                 for s in range(sent + 1, sent + n + 1))  # fmt: skip
                    crcs = tuple(map(zlib.crc32, recs))
                await sock.send_multipart(
                    wire.encode(wire.Data(STREAM, self.epoch, sent + 1, recs, crcs))
                )
                sent += n
                inflight += 1
            msg = await self._recv(sock)
            if msg is None:
                return True
            if isinstance(msg, wire.Ack) and msg.stream == STREAM:
                inflight = max(0, inflight - 1)
                self._acked(msg.hw)
            elif isinstance(msg, wire.Nack) and msg.stream == STREAM:
                self.nacks += 1
                self._acked(msg.expected - 1)
                sent, inflight = self.acked, 0  # resend from what the store has
                await asyncio.sleep(0.05)  # let ACKs of the old window arrive and be ignored
                while await self._drain(sock):
                    pass
            elif isinstance(msg, wire.Error):
                return True
        return False

    def _fixed(self) -> tuple[bytes, int]:
        rec = telemetry_record(1, self.points, self.t0)
        return rec, zlib.crc32(rec)

    async def _drain(self, sock: zmq.asyncio.Socket) -> bool:
        try:
            frames = await sock.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        msg = wire.decode(frames)
        if isinstance(msg, wire.Ack) and msg.stream == STREAM:
            self._acked(msg.hw)
        return True

    def _acked(self, hw: int) -> None:
        now = time.monotonic()
        if hw > self.acked:
            gap = now - self._last_ack
            if gap > self.ack_timeout:
                self.stalls.append((self._last_ack, gap))
            self.acked = hw
            self._last_ack = now


def fleet_keys(
    root: Path, names: Sequence[str]
) -> tuple[Path, Path, dict[str, tuple[bytes, bytes, bytes]]]:
    """A cloud key pair and one allowed key per gateway: (keys dir, allow dir, curve per name)."""
    keys_dir, allow_dir = root / "keys", root / "allowed"
    cloud = keys.create(keys_dir, "cloud", force=True)
    curves = {}
    for name in names:
        pair = keys.create(keys_dir, name, force=True)
        keys.allow(keys_dir / f"{name}.key", allow_dir)
        assert pair.secret is not None
        curves[name] = (cloud.public, pair.public, pair.secret)
    return keys_dir, allow_dir, curves


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def receiver_process(
    work: Path, index: int, db: str, keys_dir: Path, allow_dir: Path, status_interval: float = 0
) -> tuple[ManagedProcess, str]:
    """``gateway cloud`` number ``index`` on store ``db`` (CurveZMQ); (process, ROUTER endpoint).
    Not started."""
    bind = f"tcp://127.0.0.1:{free_port()}"
    pub = f"tcp://127.0.0.1:{free_port()}"
    proc = ManagedProcess(
        f"cloud{index}",
        [sys.executable, "-m", "gateway.cli", "cloud", "--keys-dir", str(keys_dir),
         "--allow-dir", str(allow_dir), "--bind", bind, "--pub", pub, "--db", db,
         "--status-interval", str(status_interval)],
        work / f"cloud{index}.log", cwd=str(ROOT),
    )  # fmt: skip
    return proc, bind


def check_store(dsn: str, fleet: Sequence[SimGateway]) -> dict[str, int]:
    """The store's promise for the fleet, from PostgreSQL: per gateway, seqs 1..count each
    exactly once (no hole, no second copy in any partition), each payload the record of its
    seq, and the stream's hw = count. Returns totals."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT gateway, seq, payload FROM records WHERE stream = %s ORDER BY gateway, seq",
            (STREAM,),
        ).fetchall()
        hws = dict(
            conn.execute("SELECT gateway, hw FROM streams WHERE stream = %s", (STREAM,)).fetchall()
        )
        points = conn.execute("SELECT count(*) FROM points").fetchone()
    by_gw: dict[str, list[tuple[int, bytes]]] = {}
    for gw, seq, payload in rows:
        by_gw.setdefault(gw, []).append((int(seq), bytes(payload)))
    for g in fleet:
        got = by_gw.get(g.name, [])
        seqs = [s for s, _ in got]
        assert len(seqs) == len(set(seqs)), f"{g.name}: a seq stored twice"
        assert seqs == list(range(1, g.count + 1)), (
            f"{g.name}: stored {len(seqs)} of {g.count}; first hole at "
            f"{next((i + 1 for i, s in enumerate(seqs) if s != i + 1), len(seqs) + 1)}"
        )
        bad = [s for s, p in got if seq_of(p) != s]
        assert not bad, f"{g.name}: payload out of order at seqs {bad[:5]}"
        assert hws.get(g.name) == g.count, f"{g.name}: hw {hws.get(g.name)} != {g.count}"
    return {"records": len(rows), "points": int(points[0]) if points else 0}
