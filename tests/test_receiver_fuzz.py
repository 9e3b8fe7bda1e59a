"""The receiver's message handling under hypothesis: arbitrary and mutated multipart messages,
valid-ish wire messages in any order, from several CurveZMQ peers with valid keys.

One real receiver (real sockets, real keys, a real SQLite file) serves the whole run on its own
thread. After every example: the receiver is still running, a well-behaved gateway's next DATA is
acknowledged within a bound, and nothing was stored for a connection that never said HELLO.

Example counts scale with ``GATEWAY_FUZZ_EXAMPLES`` (``make fuzz`` raises it); the default keeps
the suite fast.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uplink_support import make_pki

from gateway.cloud.limits import Limits
from gateway.cloud.receiver import CloudReceiver
from gateway.cloud.store import SQLiteCloudStore
from gateway.uplink import keys, wire

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "25"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ACK_BOUND = 3.0  # seconds the good gateway may wait for an ACK after a hostile example

_TAGS = [b"HELLO", b"DATA", b"DROP", b"RESULT", b"ACK", b"NACK", b"CMD", b"WELCOME", b"ERROR"]
_FIELDS = ["v", "gateway", "streams", "stream", "epoch", "first_seq", "count", "crcs",
           "records", "from", "to", "reason", "id", "outcome", "detail", "hw", "credit"]  # fmt: skip
_values = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.just(1),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.lists(st.binary(max_size=8), max_size=4),
    st.dictionaries(st.text(max_size=8), st.integers(0, 5), max_size=4),
    st.none(),
    st.booleans(),
)
_names = st.sampled_from(["s", "t", "meta", "events"])
_gateways = st.sampled_from(["h0", "h1", "good", "x"])
_seq = st.integers(1, 6)


def _msg_frames() -> st.SearchStrategy[list[bytes]]:
    messages = st.one_of(
        st.builds(wire.Hello, _gateways, st.dictionaries(_names, _seq, max_size=3)),
        st.builds(
            lambda s, e, f, n: wire.Data.build(s, e, f, [b"r%d" % i for i in range(n)]),
            _names, _seq, _seq, st.integers(1, 3),
        ),
        st.builds(
            lambda s, e, a, n, r: wire.Drop(s, e, a, a + n, r),
            _names, _seq, _seq, st.integers(0, 3), st.sampled_from(["quota", "lost"]),
        ),
        st.builds(wire.Result, st.text(min_size=1, max_size=8), st.just("ok"), st.text(max_size=8)),
        st.builds(wire.Ack, _names, _seq, _seq, _seq),
    )  # fmt: skip
    return messages.map(wire.encode)


def _mutate(frames: list[bytes], data: st.DataObject) -> list[bytes]:
    how = data.draw(st.sampled_from(["keep", "flip", "cut", "tag", "extra", "body"]))
    if how == "flip" and frames[1]:
        i = data.draw(st.integers(0, len(frames[1]) - 1))
        body = bytearray(frames[1])
        body[i] ^= data.draw(st.integers(1, 255))
        return [frames[0], bytes(body)]
    if how == "cut":
        return [frames[0], frames[1][: data.draw(st.integers(0, len(frames[1])))]]
    if how == "tag":
        return [data.draw(st.sampled_from(_TAGS)), frames[1]]
    if how == "extra":
        return [*frames, data.draw(st.binary(max_size=8))]
    if how == "body":
        body = data.draw(st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=8))
        return [frames[0], msgpack.packb(body, use_bin_type=True)]
    return frames


_raw = st.lists(st.binary(max_size=40), min_size=0, max_size=4)


class _Rig:
    """A receiver on its own thread and loop, and sync DEALERs for the peers."""

    def __init__(self, root: Path) -> None:
        self.pki = make_pki(root)
        for name in ("h0", "h1", "good"):
            self.pki.gateway(name)
        self.db = root / "cloud.db"
        self.ctx = zmq.Context()
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.rx = CloudReceiver(
            "tcp://127.0.0.1:0",
            None,
            SQLiteCloudStore(self.db),
            server_key=self.pki.cloud,
            allow=keys.AllowList(self.pki.allow_dir),
            max_message=1 << 20,
            limits=Limits(max_streams=8),
        )
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.task: asyncio.Task[None] | None = None
        self.thread.start()
        ready = threading.Event()
        self.loop.call_soon_threadsafe(lambda: self._when_ready(ready))
        assert ready.wait(10), "the receiver did not bind within 10 s"
        self.peers = [self._dealer(name) for name in ("h0", "h1")]
        self.good = self._dealer("good")
        self.seq = 0
        self._call(self.good, wire.Hello("good", {"s": 1}))

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.rx.run(self.stop))
        self.loop.run_until_complete(asyncio.wait([self.task]))

    def _when_ready(self, ready: threading.Event) -> None:
        async def wait() -> None:
            await self.rx.ready.wait()
            ready.set()

        self.loop.create_task(wait())

    def _dealer(self, name: str) -> zmq.Socket:
        pair = keys.load_secret(self.pki.gw_dir / f"{name}.key_secret")
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(ACK_BOUND * 1000))
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.pki.cloud.public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
        assert pair.secret is not None
        sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
        assert self.rx.endpoint is not None
        sock.connect(self.rx.endpoint)
        return sock

    def _call(self, sock: zmq.Socket, msg: wire.Message) -> wire.Message:
        sock.send_multipart(wire.encode(msg))
        try:
            return wire.decode(sock.recv_multipart())
        except zmq.Again:
            raise AssertionError(f"no reply to {type(msg).__name__} within {ACK_BOUND}s") from None

    def check_good_gateway_served(self) -> None:
        self.seq += 1
        reply = self._call(self.good, wire.Data.build("s", 1, self.seq, [b"good%d" % self.seq]))
        assert reply == wire.Ack("s", 1, self.seq, self.rx.credit), reply

    def drain(self) -> None:
        for sock in self.peers:
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break

    def stored_gateways(self) -> set[str]:
        conn = sqlite3.connect(self.db)
        try:
            rows = conn.execute(
                "SELECT gateway FROM records UNION SELECT gateway FROM gaps "
                "UNION SELECT gateway FROM streams"
            ).fetchall()
        finally:
            conn.close()
        return {r[0] for r in rows}

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        for sock in [*self.peers, self.good]:
            sock.close(linger=0)
        self.ctx.term()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Rig]:
    r = _Rig(tmp_path_factory.mktemp("fuzz"))
    try:
        yield r
    finally:
        r.close()


@pytest.mark.timeout(60 + EXAMPLES * 0.2)  # make fuzz runs thousands (~17 ms each)
@SETTINGS
@given(data=st.data())
def test_hostile_messages_never_crash_forge_or_starve(rig: _Rig, data: st.DataObject) -> None:
    actions = data.draw(
        st.lists(
            st.tuples(st.integers(0, 1), st.one_of(_raw, _msg_frames())), min_size=1, max_size=12
        )
    )
    for peer, frames in actions:
        if len(frames) == 2:
            frames = _mutate(frames, data)
        if peer == 1 and frames and frames[0] == b"HELLO":
            continue  # h1 never says HELLO: nothing may ever be stored for it
        if not frames:
            continue
        rig.peers[peer].send_multipart(frames)
    rig.check_good_gateway_served()
    rig.drain()
    assert rig.task is not None and not rig.task.done(), "the receiver stopped"
    assert "h1" not in rig.stored_gateways()
    assert rig.stored_gateways() <= {"h0", "good"}
    conn = sqlite3.connect(rig.db)
    try:
        rows = conn.execute(
            "SELECT seq, payload FROM records WHERE gateway = 'good' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [(i, b"good%d" % i) for i in range(1, rig.seq + 1)]
