"""CloudReceiver: the cloud end of the uplink (ROUTER in, store, PUB out).

Per DATA the order is fixed: commit (records + hw in one transaction) -> ACK -> publish. So an
ACK always means "stored", and a subscriber never sees a record the store could lose. Duplicates
(seq <= hw) are dropped and re-acked; a gap or a bad CRC is answered with NACK{expected: hw+1}.

The gateway identity is the ``gateway`` field of HELLO, bound to the ZeroMQ routing id of the
connection that sent it. That is only acceptable in this plaintext first cut: with CurveZMQ the
authenticated public key (ZAP user id) replaces it and the HELLO field is only cross-checked.

Store calls run on one worker thread, so the event loop keeps serving while a commit fsyncs and
commits are applied in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import msgpack
import zmq
import zmq.asyncio

from gateway.uplink import wire
from gateway.uplink.store import CloudStore, SequenceGap, SQLiteCloudStore

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

RATE_WINDOW = 10.0  # seconds over which records/s is computed
PUB_HWM = 100_000  # records queued per subscriber before PUB drops


@dataclass
class _GatewayState:
    last_seen: float = 0.0
    records: int = 0
    duplicates: int = 0
    nacks: int = 0
    hw: dict[str, tuple[int, int]] = field(default_factory=dict)  # stream -> (epoch, hw)
    recent: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)


class CloudReceiver:
    """Receives DATA from any number of gateways, stores it exactly once, fans it out on PUB.

    Parameters
    ----------
    bind, pub_bind
        ZeroMQ endpoints for the ROUTER and the PUB (None: no fan-out). ``tcp://127.0.0.1:0``
        binds a free port; the bound addresses are in ``endpoint`` / ``pub_endpoint`` once
        ``ready`` is set.
    store
        Where records go; opened and closed by :meth:`run`.
    credit
        Records a gateway may have in flight (sent in WELCOME and every ACK).
    idle_timeout
        A gateway not heard from for this long is reported as disconnected.
    """

    def __init__(
        self,
        bind: str,
        pub_bind: str | None,
        store: CloudStore,
        credit: int = 10000,
        clock: Callable[[], float] = time.time,
        *,
        idle_timeout: float = 30.0,
    ) -> None:
        self.bind = bind
        self.pub_bind = pub_bind
        self.store = store
        self.credit = credit
        self.idle_timeout = idle_timeout
        self._clock = clock
        self.endpoint: str | None = None
        self.pub_endpoint: str | None = None
        self.ready = asyncio.Event()
        self._peers: dict[bytes, str] = {}  # routing id -> gateway (from HELLO)
        self._gateways: dict[str, _GatewayState] = {}
        self._hw: dict[tuple[str, str, int], int] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pub: zmq.asyncio.Socket | None = None
        self.bad_messages = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; binds, opens the store, closes both on the way out."""
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cloud-store")
        ctx = zmq.asyncio.Context.instance()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        pub = None
        try:
            await loop.run_in_executor(self._executor, self.store.open)
            router.bind(_port0(self.bind))
            self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            if self.pub_bind:
                pub = ctx.socket(zmq.PUB)
                pub.setsockopt(zmq.LINGER, 0)
                # A burst is one DATA (up to 1000 records) per gateway; the default HWM of 1000
                # would drop within a single burst. Still bounded: slow subscribers lose data.
                pub.setsockopt(zmq.SNDHWM, PUB_HWM)
                pub.bind(_port0(self.pub_bind))
                self.pub_endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
                self._pub = pub
            self.ready.set()
            stopper = asyncio.ensure_future(stop.wait())
            recv = asyncio.ensure_future(router.recv_multipart())
            try:
                while True:
                    await asyncio.wait({stopper, recv}, return_when="FIRST_COMPLETED")
                    if not recv.done():
                        break
                    frames = recv.result()
                    await self._handle(router, frames)
                    recv = asyncio.ensure_future(router.recv_multipart())
            finally:
                stopper.cancel()
                recv.cancel()
        finally:
            router.close(linger=0)
            if pub is not None:
                pub.close(linger=0)
            self._pub = None
            self.ready.clear()
            await loop.run_in_executor(self._executor, self.store.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _store_call(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _handle(self, router: zmq.asyncio.Socket, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return
        ident, body = frames[0], frames[1:]

        async def reply(msg: wire.Message) -> None:
            await router.send_multipart([ident, *wire.encode(msg)])

        try:
            msg = wire.decode(body)
        except wire.VersionError as exc:
            self.bad_messages += 1
            await reply(wire.Error("version", str(exc)))
            return
        except wire.WireError as exc:
            self.bad_messages += 1
            _log.warning("cloud: bad message: %s", exc)
            await reply(wire.Error("bad", str(exc)))
            return
        if not isinstance(msg, wire.Hello | wire.Data):
            self.bad_messages += 1
            await reply(wire.Error("bad", f"unexpected {type(msg).__name__} from a gateway"))
            return
        gateway = self._peers.get(ident)
        if isinstance(msg, wire.Data) and gateway is None:
            await reply(wire.Error("hello_required", "DATA before HELLO on this connection"))
            return
        try:
            if isinstance(msg, wire.Hello):
                await self._on_hello(ident, msg, reply)
            elif gateway is not None:
                await self._on_data(gateway, msg, reply)
        except zmq.ZMQError:
            raise
        except Exception:
            # A store failure: no ACK, so the gateway replays after its ack timeout. The cached
            # hw may be stale now; reload it from the store next time.
            _log.exception("cloud: store failure; not acknowledging")
            self._hw.clear()

    async def _on_hello(self, ident: bytes, msg: wire.Hello, reply: _Reply) -> None:
        # One live connection per gateway: older routing ids of it are forgotten.
        for other in [i for i, g in self._peers.items() if g == msg.gateway]:
            del self._peers[other]
        self._peers[ident] = msg.gateway
        state = self._gateways.setdefault(msg.gateway, _GatewayState())
        state.last_seen = self._clock()
        hw: dict[str, tuple[int, int]] = {}
        for stream, epoch in msg.streams.items():
            hw[stream] = (epoch, await self._current_hw(msg.gateway, stream, epoch))
            state.hw[stream] = hw[stream]
        await reply(wire.Welcome(hw, self.credit))

    async def _current_hw(self, gateway: str, stream: str, epoch: int) -> int:
        key = (gateway, stream, epoch)
        if key not in self._hw:
            self._hw[key] = await self._store_call(self.store.hw, gateway, stream, epoch)
        return self._hw[key]

    async def _on_data(self, gateway: str, msg: wire.Data, reply: _Reply) -> None:
        state = self._gateways.setdefault(gateway, _GatewayState())
        now = self._clock()
        state.last_seen = now
        hw = await self._current_hw(gateway, msg.stream, msg.epoch)
        if not msg.crc_ok() or msg.first_seq > hw + 1:
            state.nacks += 1
            await reply(wire.Nack(msg.stream, msg.epoch, hw + 1))
            return
        if msg.last_seq <= hw:
            state.duplicates += msg.count
            await reply(wire.Ack(msg.stream, msg.epoch, hw, self.credit))
            return
        try:
            new_hw = await self._store_call(
                self.store.commit, gateway, msg.stream, msg.epoch, msg.first_seq, msg.records
            )
        except SequenceGap as gap:  # another writer of the store moved hw
            self._hw[(gateway, msg.stream, msg.epoch)] = gap.hw
            state.nacks += 1
            await reply(wire.Nack(msg.stream, msg.epoch, gap.hw + 1))
            return
        fresh = new_hw - hw
        state.duplicates += msg.count - fresh
        state.records += fresh
        state.recent.append((now, fresh))
        self._hw[(gateway, msg.stream, msg.epoch)] = new_hw
        state.hw[msg.stream] = (msg.epoch, new_hw)
        await reply(wire.Ack(msg.stream, msg.epoch, new_hw, self.credit))
        if self._pub is not None:
            topic = f"{gateway}/{msg.stream}".encode()
            for i, payload in enumerate(msg.records[msg.count - fresh :]):
                header = msgpack.packb(
                    {
                        "v": wire.PROTOCOL_VERSION,
                        "gateway": gateway,
                        "stream": msg.stream,
                        "epoch": msg.epoch,
                        "seq": hw + 1 + i,
                    }
                )
                await self._pub.send_multipart([topic, header, payload])

    def status(self) -> dict[str, dict[str, object]]:
        """Per gateway: connected, last_seen, streams {stream: {epoch, hw}}, rates, counters."""
        now = self._clock()
        out: dict[str, dict[str, object]] = {}
        for gateway, st in sorted(self._gateways.items()):
            while st.recent and st.recent[0][0] < now - RATE_WINDOW:
                st.recent.popleft()
            out[gateway] = {
                "connected": gateway in self._peers.values()
                and now - st.last_seen <= self.idle_timeout,
                "last_seen": st.last_seen,
                "streams": {s: {"epoch": e, "hw": h} for s, (e, h) in sorted(st.hw.items())},
                "records": st.records,
                "records_per_s": sum(n for _, n in st.recent) / RATE_WINDOW,
                "duplicates": st.duplicates,
                "nacks": st.nacks,
            }
        return out


_Reply = Callable[[wire.Message], Awaitable[None]]


def _port0(endpoint: str) -> str:
    """Accept ``tcp://host:0`` for "any free port" (ZeroMQ spells it ``*``)."""
    return (
        endpoint[:-2] + ":*"
        if endpoint.startswith("tcp://") and endpoint.endswith(":0")
        else endpoint
    )


async def run_cloud(
    bind: str,
    pub_bind: str,
    db_path: str,
    status_interval: float = 2.0,
    stop: asyncio.Event | None = None,
    print_status: bool = True,
) -> None:
    """Run a receiver on an SQLite store until ``stop`` (or SIGINT/SIGTERM) — ``gateway cloud``."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                pass
    receiver = CloudReceiver(bind, pub_bind or None, SQLiteCloudStore(db_path))
    task = asyncio.create_task(receiver.run(stop))
    try:
        ready = asyncio.ensure_future(receiver.ready.wait())
        await asyncio.wait({task, ready}, return_when="FIRST_COMPLETED")
        ready.cancel()
        if print_status and receiver.ready.is_set():
            print(
                f"cloud: ROUTER {receiver.endpoint}  PUB {receiver.pub_endpoint}  store {db_path}",
                flush=True,
            )
        while not task.done():
            await asyncio.wait({task}, timeout=status_interval)
            if print_status and not task.done():
                for gw, st in receiver.status().items():
                    streams = " ".join(f"{s}={v['hw']}" for s, v in st["streams"].items())  # type: ignore[attr-defined]
                    print(
                        f"cloud: {gw} {'up' if st['connected'] else 'down'} "
                        f"{st['records_per_s']:.0f} rec/s dup={st['duplicates']} {streams}",
                        flush=True,
                    )
        await task
    finally:
        if not task.done():
            stop.set()
            await task
