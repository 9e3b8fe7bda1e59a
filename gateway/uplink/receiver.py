"""CloudReceiver: the cloud end of the uplink (ROUTER in, store, PUB out).

Per DATA the order is fixed: commit (records + hw in one transaction) -> ACK -> publish. So an
ACK always means "stored", and a subscriber never sees a record the store could lose. Duplicates
(seq <= hw) are dropped and re-acked; a gap or a bad CRC is answered with NACK{expected: hw+1}.

With CurveZMQ (the default of ``gateway cloud``) the gateway identity is the ZAP User-Id of the
frames, i.e. the allow-list name of the key that authenticated; HELLO's ``gateway`` field is only
cross-checked. In plaintext mode it is HELLO's field, bound to the connection's routing id.
Downlink commands (CMD) go to the gateway's live connection and are re-sent after each of its
HELLOs until a RESULT comes back.

Store calls run on one worker thread, so the event loop keeps serving while a commit fsyncs and
commits are applied in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from gateway.uplink import wire
from gateway.uplink.keys import AllowList, KeyPair
from gateway.uplink.store import CloudStore, SequenceGap
from gateway.uplink.zap import ZapHandler

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
    dropped: int = 0  # seqs announced as deliberate gaps
    sessions: int = 0
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
    server_key, allow
        CurveZMQ: the receiver's key pair and the allow-list of gateway keys. Both None means
        plaintext (identity from HELLO), which :func:`run_cloud` only does when told to.
    max_message
        Largest frame accepted; libzmq disconnects a peer that sends a larger one.
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
        server_key: KeyPair | None = None,
        allow: AllowList | None = None,
        max_message: int = wire.MAX_BODY_BYTES,
    ) -> None:
        if (server_key is None) != (allow is None):
            raise ValueError("CurveZMQ needs both server_key and allow (or neither: plaintext)")
        if server_key is not None and server_key.secret is None:
            raise ValueError("server_key has no secret half")
        self.bind = bind
        self.pub_bind = pub_bind
        self.store = store
        self.credit = credit
        self.idle_timeout = idle_timeout
        self.server_key = server_key
        self.allow = allow
        self.max_message = max_message
        self._clock = clock
        self.endpoint: str | None = None
        self.pub_endpoint: str | None = None
        self.ready = asyncio.Event()
        self._peers: dict[bytes, str] = {}  # routing id -> gateway (authenticated)
        self._ident_of: dict[str, bytes] = {}  # gateway -> its live routing id
        self._gateways: dict[str, _GatewayState] = {}
        self._hw: dict[tuple[str, str, int], int] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pub: zmq.asyncio.Socket | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._zap: ZapHandler | None = None
        self._commands: dict[str, _PendingCommand] = {}
        self.bad_messages = 0
        self.identity_rejected = 0
        self.unauthorised = 0
        self.handshake_failed = 0
        self.disconnects = 0

    @property
    def secure(self) -> bool:
        return self.server_key is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; binds, opens the store, closes both on the way out."""
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cloud-store")
        # A private context: the ZAP handler endpoint is per context, and several receivers
        # (tests, failover pairs) may live in one process.
        ctx = zmq.asyncio.Context()
        tasks: list[asyncio.Task[None]] = []
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        router.setsockopt(zmq.MAXMSGSIZE, self.max_message)  # larger: peer disconnected
        pub = None
        try:
            await loop.run_in_executor(self._executor, self.store.open)
            if self.server_key is not None and self.allow is not None:
                self._zap = ZapHandler(ctx, self.allow)
                tasks.append(asyncio.create_task(self._zap.serve()))
                router.setsockopt(zmq.CURVE_SERVER, 1)
                assert self.server_key.secret is not None
                router.setsockopt(zmq.CURVE_SECRETKEY, self.server_key.secret)
                router.setsockopt(zmq.ZAP_DOMAIN, b"gateway")
            monitor = router.get_monitor_socket(_HANDSHAKE_FAILED)
            tasks.append(asyncio.create_task(self._count_handshake_failures(monitor)))
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
            self._router = router
            self.ready.set()
            stopper = asyncio.ensure_future(stop.wait())
            recv = asyncio.ensure_future(router.recv_multipart(copy=False))
            try:
                while True:
                    await asyncio.wait({stopper, recv}, return_when="FIRST_COMPLETED")
                    if not recv.done():
                        break
                    frames = recv.result()
                    await self._handle(router, frames)
                    recv = asyncio.ensure_future(router.recv_multipart(copy=False))
            finally:
                stopper.cancel()
                recv.cancel()
        finally:
            self._router = None
            # Stop the monitor while its reader socket is still open: libzmq sends monitor
            # events blocking, so a monitor whose PAIR peer is gone would hang this call.
            try:
                router.disable_monitor()
            except zmq.ZMQError:
                pass
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            router.close(linger=0)
            if pub is not None:
                pub.close(linger=0)
            if self._zap is not None:
                self._zap.close()
            self._pub = None
            self.ready.clear()
            ctx.destroy(linger=0)
            for p in self._commands.values():
                if not p.future.done():
                    p.future.set_exception(RuntimeError("receiver stopped"))
            await loop.run_in_executor(self._executor, self.store.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _count_handshake_failures(self, monitor: zmq.asyncio.Socket) -> None:
        """Socket monitor: failed handshakes (wrong server key, plaintext client, unknown key)
        and disconnects (dead peers, frames above ``max_message``) are counted, never fatal."""
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    self.disconnects += 1
                    continue
                self.handshake_failed += 1
                _log.warning(
                    "cloud: handshake failed from %s (wrong server key? not CURVE?)",
                    event.get("endpoint", b"?").decode(errors="replace")
                    if isinstance(event.get("endpoint"), bytes)
                    else event.get("endpoint"),
                )
        finally:
            monitor.close(linger=0)

    async def _store_call(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _handle(self, router: zmq.asyncio.Socket, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            return
        ident = frames[0].bytes
        body = [f.bytes for f in frames[1:]]
        user = str(frames[1].get("User-Id")) if self.secure else None

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
        if not isinstance(msg, wire.Hello | wire.Data | wire.Drop | wire.Result):
            self.bad_messages += 1
            await reply(wire.Error("bad", f"unexpected {type(msg).__name__} from a gateway"))
            return
        if user is not None and self.allow is not None and not self.allow.has_name(user):
            self.unauthorised += 1  # its key left the allow-list after it connected
            self._peers.pop(ident, None)
            _log.warning("cloud: %s is no longer in the allow-list; refusing it", user)
            await reply(wire.Error("unauthorised", "key removed from the allow-list"))
            return
        if isinstance(msg, wire.Hello):
            claimed = msg.gateway
            if user is not None and claimed != user:
                self.identity_rejected += 1
                _log.warning("cloud: key of %r claimed to be %r; rejected", user, claimed)
                await reply(wire.Error("identity", f"authenticated as {user!r}, not {claimed!r}"))
                return
        gateway = self._peers.get(ident)
        if not isinstance(msg, wire.Hello) and gateway is None:
            await reply(
                wire.Error("hello_required", f"{_TAG[type(msg)]} before HELLO on this connection")
            )
            return
        try:
            if isinstance(msg, wire.Hello):
                await self._on_hello(ident, msg, reply)
            elif gateway is None:
                pass
            elif isinstance(msg, wire.Data):
                await self._on_data(gateway, msg, reply)
            elif isinstance(msg, wire.Drop):
                await self._on_drop(gateway, msg, reply)
            else:
                self._on_result(gateway, msg)
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
        self._ident_of[msg.gateway] = ident
        state = self._gateways.setdefault(msg.gateway, _GatewayState())
        state.last_seen = self._clock()
        state.sessions += 1
        hw: dict[str, tuple[int, int]] = {}
        for stream, epoch in msg.streams.items():
            hw[stream] = (epoch, await self._current_hw(msg.gateway, stream, epoch))
            state.hw[stream] = hw[stream]
        await reply(wire.Welcome(hw, self.credit))
        for p in self._commands.values():  # commands not yet answered: (re)send them now
            if p.gateway == msg.gateway and not p.future.done():
                await reply(p.msg)

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
                header = _header(gateway, msg.stream, msg.epoch, hw + 1 + i)
                await self._pub.send_multipart([topic, header, payload])

    async def _on_drop(self, gateway: str, msg: wire.Drop, reply: _Reply) -> None:
        state = self._gateways.setdefault(gateway, _GatewayState())
        state.last_seen = self._clock()
        hw = await self._current_hw(gateway, msg.stream, msg.epoch)
        if msg.first > hw + 1:
            state.nacks += 1
            await reply(wire.Nack(msg.stream, msg.epoch, hw + 1))
            return
        if msg.last > hw:
            await self._store_call(
                self.store.drop, gateway, msg.stream, msg.epoch, msg.first, msg.last, msg.reason
            )
            state.dropped += msg.last - hw
            _log.warning(
                "cloud: %s/%s epoch %d: seqs %d..%d dropped at the gateway (%s)",
                gateway, msg.stream, msg.epoch, hw + 1, msg.last, msg.reason,
            )  # fmt: skip
            self._hw[(gateway, msg.stream, msg.epoch)] = msg.last
            state.hw[msg.stream] = (msg.epoch, msg.last)
            if self._pub is not None:
                header = _header(
                    gateway, msg.stream, msg.epoch, msg.last, gap=[hw + 1, msg.last, msg.reason]
                )
                await self._pub.send_multipart([f"{gateway}/{msg.stream}".encode(), header, b""])
            hw = msg.last
        await reply(wire.Ack(msg.stream, msg.epoch, hw, self.credit))

    # --- downlink commands ---------------------------------------------------------------------

    async def command(
        self,
        gateway: str,
        kind: str,
        args: dict[str, Any] | None = None,
        *,
        command_id: str | None = None,
        timeout: float | None = None,
    ) -> wire.Result:
        """Send a command to ``gateway`` and wait for its RESULT.

        Sent now if the gateway is connected and again after each of its HELLOs until answered;
        a repeated ``command_id`` is the same command (the gateway executes it once).
        """
        cid = command_id or uuid.uuid4().hex
        pending = self._commands.get(cid)
        if pending is None or pending.future.done():
            fut: asyncio.Future[wire.Result] = asyncio.get_running_loop().create_future()
            pending = _PendingCommand(gateway, wire.Command(cid, kind, dict(args or {})), fut)
            self._commands[cid] = pending
        ident = self._ident_of.get(gateway)
        if ident is not None and self._router is not None and self._peers.get(ident) == gateway:
            await self._router.send_multipart([ident, *wire.encode(pending.msg)])
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        finally:
            if pending.future.done():
                self._commands.pop(cid, None)

    def _on_result(self, gateway: str, msg: wire.Result) -> None:
        pending = self._commands.get(msg.id)
        if pending is None or pending.gateway != gateway or pending.future.done():
            return  # an answer to a retry already answered, or not ours
        pending.future.set_result(msg)

    # --- status --------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Receiver-wide rejections: none of them stops the receiver."""
        zap = self._zap
        return {
            "bad_messages": self.bad_messages,
            "auth_rejected": zap.rejected if zap else 0,
            "auth_accepted": zap.accepted if zap else 0,
            "handshake_failed": self.handshake_failed,
            "disconnects": self.disconnects,
            "identity_rejected": self.identity_rejected,
            "unauthorised": self.unauthorised,
        }

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
                "dropped": st.dropped,
                "sessions": st.sessions,
            }
        return out


@dataclass
class _PendingCommand:
    gateway: str
    msg: wire.Command
    future: asyncio.Future[wire.Result]


_TAG = {wire.Data: "DATA", wire.Drop: "DROP", wire.Result: "RESULT"}
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_DISCONNECTED
)


def _header(gateway: str, stream: str, epoch: int, seq: int, **extra: object) -> bytes:
    body = {"v": wire.PROTOCOL_VERSION, "gateway": gateway, "stream": stream, "epoch": epoch}
    body["seq"] = seq
    body.update(extra)
    return msgpack.packb(body)


_Reply = Callable[[wire.Message], Awaitable[None]]


def _port0(endpoint: str) -> str:
    """Accept ``tcp://host:0`` for "any free port" (ZeroMQ spells it ``*``)."""
    return (
        endpoint[:-2] + ":*"
        if endpoint.startswith("tcp://") and endpoint.endswith(":0")
        else endpoint
    )
