"""CloudReceiver: the cloud end of the uplink (ROUTER in, store, PUB out).

Per DATA the order is fixed: commit (records + hw in one transaction) -> ACK -> publish. So an
ACK always means "stored", and a subscriber never sees a record the store could lose. Duplicates
(seq <= hw) are dropped and re-acked; a gap or a bad CRC is answered with NACK{expected: hw+1}.

Identity: with CurveZMQ (the default of ``gateway cloud``) a gateway is the ZAP User-Id of each
message's frames, i.e. the allow-list name of the key that authenticated; HELLO's ``gateway``
field is only cross-checked. In plaintext mode it is HELLO's field. Either way a session exists
only on the connection that said HELLO (:mod:`gateway.cloud.sessions`): DATA, DROP or RESULT
from any other connection is refused with ``ERROR{hello_required}``, whatever its routing id.

Fairness: libzmq fair-queues the ROUTER's inbound pipes (one per connection, bounded by RCVHWM),
and each message costs a bounded amount of work (:class:`~gateway.cloud.limits.Limits`: streams
per HELLO and gateway, records per DATA, pending commands), with a HELLO's hw lookups in one
store call. So one gateway cannot stall the others for longer than one bounded message.

Store calls run on one worker thread, so the event loop keeps serving while a commit fsyncs and
commits are applied in arrival order. DATA is group-committed (:mod:`gateway.cloud.commitgroup`):
the messages waiting on the socket are stored in one transaction, then acknowledged. A store file deleted or replaced under the receiver is
detected before anything is acknowledged from it (:class:`~gateway.cloud.store.StoreReplaced`):
the store is reopened, the acknowledged seqs it held are announced as ``store_lost`` gaps, and an
alarm is raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from gateway.cloud.commitgroup import CommitGroup, gather
from gateway.cloud.downlink import CommandBook, Downlink
from gateway.cloud.fanout import Fanout
from gateway.cloud.gate import Admitted, Gate
from gateway.cloud.limits import BoundedDict, GatewayState, LimitExceeded, Limits
from gateway.cloud.promtext import Histogram
from gateway.cloud.receiver_report import ReceiverReport
from gateway.cloud.sessions import ConnectionMonitor, DuplicateWatch, Session, SessionTable
from gateway.cloud.store import STORE_LOST, CloudStore, SequenceGap, StoreReplaced
from gateway.cloud.storeloss import record_lost
from gateway.cloud.zap import ZapHandler
from gateway.uplink import wire
from gateway.uplink.keys import AllowList, KeyPair

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

RCV_HWM = 1000  # messages queued per connection before libzmq stops reading it
META_STREAM = "meta"  # the gateway's point model (gateway/core/records.py)
WARN_EVERY = 10.0  # seconds between two warnings of one kind (floods are counted, not logged)


class CloudReceiver(ReceiverReport):
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
        Records a gateway may have in flight (sent in WELCOME and every ACK); also the most
        records one DATA may carry.
    idle_timeout
        A gateway not heard from for this long is reported as disconnected.
    server_key, allow
        CurveZMQ: the receiver's key pair and the allow-list of gateway keys. Both None means
        plaintext (identity from HELLO, trusting the network), which :func:`run_cloud` only does
        when told to.
    max_message
        Largest frame accepted; libzmq disconnects a peer that sends a larger one.
    limits
        What one peer may make the receiver hold (:class:`Limits`).
    group_max_messages, group_max_delay
        Group commit: at most this many messages per transaction, waiting at most this long
        (seconds) for more once one has arrived. 0 s: take only what is already waiting (the
        time a commit takes is the window; nothing waits longer than the commit before it).
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
        limits: Limits | None = None,
        group_max_messages: int = 256,
        group_max_delay: float = 0.0,
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
        self.limits = limits or Limits()
        if group_max_messages < 1 or group_max_delay < 0:
            raise ValueError("group_max_messages must be >= 1 and group_max_delay >= 0")
        self.group_max_messages = group_max_messages
        self.group_max_delay = group_max_delay
        self._group = CommitGroup()
        self.group_commits = 0  # transactions of DATA
        self.group_messages = 0  # DATA messages they stored
        self._clock = clock
        self.endpoint: str | None = None
        self.pub_endpoint: str | None = None
        self.ready = asyncio.Event()
        self._sessions = SessionTable()
        self._dup = DuplicateWatch(
            self.limits.duplicate_window, self.limits.duplicate_takeovers, self.limits.max_gateways
        )
        self._gateways: BoundedDict[str, GatewayState] = BoundedDict(
            self.limits.max_gateways, lambda gw, _: not self._sessions.connected(gw)
        )
        self._hw: BoundedDict[tuple[str, str, int], int] = BoundedDict(self.limits.max_hw_cache)
        self._executor: ThreadPoolExecutor | None = None
        self._fanout = Fanout(zmq.asyncio.Context.instance(), None)  # replaced by run()
        self._router: zmq.asyncio.Socket | None = None
        self._monitor: ConnectionMonitor | None = None
        self._zap: ZapHandler | None = None
        self._commands = CommandBook(self.limits)
        self._downlink = Downlink(self._commands, self._send_to, self._warn)
        self._warned: dict[str, float] = {}
        # A lost store that could not be reopened yet, and when to try again.
        self._store_failed: tuple[StoreReplaced, float] | None = None
        self._gate = Gate(self._sessions, allow, self._warn)
        self.limit_refused = 0
        self.duplicate_identity = 0
        self.store_replaced = 0
        self.store_lost_seqs = 0
        self.records_stored = 0  # fresh records committed since start (metrics)
        self.commit_seconds = Histogram()  # one group commit's transaction, fsync included

    @property
    def secure(self) -> bool:
        return self.server_key is not None

    @property
    def bad_messages(self) -> int:
        return self._gate.bad_messages

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
        router.setsockopt(zmq.RCVHWM, RCV_HWM)
        fanout: Fanout | None = None
        try:
            await loop.run_in_executor(self._executor, self.store.open)
            if self.server_key is not None and self.allow is not None:
                self._zap = ZapHandler(ctx, self.allow)
                tasks.append(asyncio.create_task(self._zap.serve()))
                router.setsockopt(zmq.CURVE_SERVER, 1)
                assert self.server_key.secret is not None
                router.setsockopt(zmq.CURVE_SECRETKEY, self.server_key.secret)
                router.setsockopt(zmq.ZAP_DOMAIN, b"gateway")
            self._monitor = ConnectionMonitor(router, self._sessions)
            tasks.append(asyncio.create_task(self._monitor.serve()))
            router.bind(_port0(self.bind))
            self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            fanout = self._fanout = Fanout(ctx, _port0(self.pub_bind) if self.pub_bind else None)
            self.pub_endpoint = fanout.endpoint
            self._router = router
            self.ready.set()
            stopper = asyncio.ensure_future(stop.wait())
            recv: asyncio.Future[Any] | None = None
            try:
                while True:
                    if recv is None:
                        recv = asyncio.ensure_future(router.recv_multipart(copy=False))
                    await asyncio.wait({stopper, recv}, return_when="FIRST_COMPLETED")
                    if not recv.done():
                        break
                    group, recv = await gather(
                        router, recv.result(), stopper,
                        self.group_max_messages, self.group_max_delay,
                    )  # fmt: skip
                    for frames in group:
                        await self._handle(router, frames)
                    await self._commit_group()
            finally:
                stopper.cancel()
                if recv is not None:
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
            if fanout is not None:
                fanout.close()
            if self._zap is not None:
                self._zap.close()
            self.ready.clear()
            ctx.destroy(linger=0)
            self._commands.fail_all("receiver stopped")
            await loop.run_in_executor(self._executor, self.store.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    # --- connections ---------------------------------------------------------------------------

    async def _send_to(self, gateway: str, msg: wire.Message) -> None:
        """Send to ``gateway``'s live session, if it has one."""
        session = self._sessions.of_gateway(gateway)
        if session is not None and self._router is not None:
            await self._router.send_multipart([session.ident, *wire.encode(msg)])

    def _warn(self, kind: str, fmt: str, *args: object) -> None:
        """A warning at most every WARN_EVERY seconds per kind: a flood is counted, not logged."""
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY) >= WARN_EVERY:
            self._warned[kind] = now
            _log.warning(fmt, *args)

    async def _commit_group(self) -> None:
        """Store the staged DATA in one transaction, then send their replies in order."""
        if not self._group:
            return
        group = self._group.take()
        results: list[int | SequenceGap] = []
        if group.items:
            try:
                t0 = time.perf_counter()
                results = await self._store_call(self.store.commit_many, group.items)
                self.commit_seconds.observe(time.perf_counter() - t0)
            except StoreReplaced as exc:
                await self._store_lost(exc)
                return
            except Exception:
                # No ACK, so the gateways replay after their ack timeout. The cached hw may be
                # stale now; reload it from the store next time.
                _log.exception("cloud: store failure; not acknowledging")
                self._hw.clear()
                return
            self.group_commits += 1
            self.group_messages += len(group.items)
        for fn in group.after:
            await fn(results)

    async def _store_call(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- messages ------------------------------------------------------------------------------

    async def _handle(self, router: zmq.asyncio.Socket, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2 or frames[1].bytes != b"DATA":
            # Anything but DATA: what came before is committed and answered first, before this
            # message costs any work (a hostile one must not delay the ACKs of others).
            await self._commit_group()
        if self._monitor is not None:
            self._monitor.drain()
        ident = frames[0].bytes

        async def reply(msg: wire.Message) -> None:
            await router.send_multipart([ident, *wire.encode(msg)])

        verdict = self._gate.admit(frames)
        if verdict is None:
            return
        if isinstance(verdict, wire.Error):
            await reply(verdict)
            return
        msg, session = verdict.msg, verdict.session
        if self._store_failed is not None:
            lost_exc, retry_at = self._store_failed
            if time.monotonic() >= retry_at:
                await self._store_lost(lost_exc, retry=True)
            if self._store_failed is not None:
                return  # no store: acknowledge nothing; the gateway retries after its timeout
        try:
            if isinstance(msg, wire.Hello):
                await self._on_hello(verdict, msg, reply)
            elif session is None:
                pass
            elif isinstance(msg, wire.Data):
                await self._on_data(session.gateway, msg, reply)
            elif isinstance(msg, wire.Drop):
                await self._on_drop(session.gateway, msg, reply)
            else:
                self._downlink.on_result(session.gateway, msg)
        except LimitExceeded as exc:
            self.limit_refused += 1
            gw = session.gateway if session is not None else getattr(msg, "gateway", "?")
            self._warn("limit", "cloud: %s refused: %s", gw, exc)
            await reply(wire.Error("limit", str(exc)))
        except StoreReplaced as exc:
            await self._store_lost(exc)
        except zmq.ZMQError:
            raise
        except Exception:
            # A store failure: no ACK, so the gateway replays after its ack timeout. The cached
            # hw may be stale now; reload it from the store next time.
            _log.exception("cloud: store failure; not acknowledging")
            self._hw.clear()

    def _state(self, gateway: str) -> GatewayState:
        state = self._gateways.get(gateway)
        if state is None:
            if self._gateways.full():
                raise LimitExceeded(
                    f"{len(self._gateways)} gateways connected, the receiver's limit "
                    f"(limits.max_gateways)"
                )
            state = GatewayState()
            self._gateways.put(gateway, state)
        else:
            self._gateways.touch(gateway)
        return state

    async def _on_hello(self, door: Admitted, msg: wire.Hello, reply: _Reply) -> None:
        limit = self.limits.max_streams
        if len(msg.streams) > limit:
            raise LimitExceeded(
                f"HELLO lists {len(msg.streams)} streams; at most {limit} per gateway "
                "(limits.max_streams)"
            )
        state = self._state(msg.gateway)
        hws = await self._store_call(self.store.hw_many, msg.gateway, msg.streams)
        now = self._clock()
        session = Session(door.ident, door.fd, door.user, msg.gateway, now)
        previous = self._sessions.establish(session)
        state.last_seen = now
        state.sessions += 1
        state.hw = {s: (e, hws[s]) for s, e in msg.streams.items()}
        state.announced_last = None if msg.last is None else dict(msg.last)
        state.announced = (
            None if msg.last is None else {s: max(0, q - hws[s]) for s, q in msg.last.items()}
        )
        for s, e in msg.streams.items():
            self._hw.put((msg.gateway, s, e), hws[s])
        await reply(wire.Welcome(state.hw, self.credit))
        for command in self._commands.waiting(msg.gateway):  # not answered yet: (re)send them
            await reply(command)
        why = self._dup.hello(msg.gateway, msg.streams, previous is not None, now)
        if why is not None:
            self.duplicate_identity += 1
            await self._alarm(msg.gateway, "duplicate_identity", why)
        if META_STREAM in msg.streams and not state.meta_checked:
            await self._check_meta(msg.gateway, state)

    async def _check_meta(self, gateway: str, state: GatewayState) -> None:
        state.meta_checked = True
        if not await self._store_call(self.store.has_records, gateway, META_STREAM):
            await self._downlink.request_meta(gateway)

    async def _current_hw(self, gateway: str, stream: str, epoch: int) -> int:
        key = (gateway, stream, epoch)
        hw = self._group.hw(key)  # DATA of this stream waits in the group: its hw after it
        if hw is not None:
            return hw
        hw = self._hw.get(key)
        if hw is None:
            hw = await self._store_call(self.store.hw, gateway, stream, epoch)
            self._hw.put(key, hw)
        return hw

    def _check_stream(self, state: GatewayState, stream: str) -> None:
        if stream not in state.hw and len(state.hw) >= self.limits.max_streams:
            raise LimitExceeded(
                f"a new stream beyond {self.limits.max_streams} streams (limits.max_streams)"
            )

    async def _on_data(self, gateway: str, msg: wire.Data, reply: _Reply) -> None:
        state = self._state(gateway)
        self._check_stream(state, msg.stream)
        if msg.count > self.credit:
            raise LimitExceeded(f"DATA of {msg.count} records, more than the credit {self.credit}")
        now = self._clock()
        state.last_seen = now
        hw = await self._current_hw(gateway, msg.stream, msg.epoch)
        key = (gateway, msg.stream, msg.epoch)
        if msg.crc_ok() and msg.first_seq > hw + 1 and self._group.hw(key) is None:
            # Receivers sharing a store (failover): another one may have moved hw since we
            # cached it. The store decides what is a gap, never this receiver's memory.
            hw = await self._store_call(self.store.hw, gateway, msg.stream, msg.epoch)
            self._hw.put(key, hw)
        if not msg.crc_ok() or msg.first_seq > hw + 1:
            state.nacks += 1
            nack = wire.Nack(msg.stream, msg.epoch, hw + 1)
            self._group.then(lambda _: reply(nack))
            return
        if msg.last_seq <= hw:
            state.duplicates += msg.count
            ack = wire.Ack(msg.stream, msg.epoch, hw, self.credit)
            self._group.then(lambda _: reply(ack))  # hw may be one the group is storing
            return
        index = self._group.stage(
            (gateway, msg.stream, msg.epoch, msg.first_seq, msg.records), msg.last_seq
        )

        async def stored(results: list[int | SequenceGap]) -> None:
            await self._on_stored(gateway, state, msg, hw, results[index], reply)

        self._group.then(stored)

    async def _on_stored(
        self,
        gateway: str,
        state: GatewayState,
        msg: wire.Data,
        hw: int,
        result: int | SequenceGap,
        reply: _Reply,
    ) -> None:
        """One DATA of a group commit is durable: ACK it, then publish its new records."""
        key = (gateway, msg.stream, msg.epoch)
        if isinstance(result, SequenceGap):  # another writer of the store moved hw
            self._hw.put(key, result.hw)
            state.nacks += 1
            await reply(wire.Nack(msg.stream, msg.epoch, result.hw + 1))
            return
        new_hw = result
        fresh = max(0, min(msg.count, new_hw - hw))
        state.duplicates += msg.count - fresh
        state.records += fresh
        state.last_commit = self._clock()
        self.records_stored += fresh
        state.count_recent(self._clock(), fresh)
        self._hw.put(key, new_hw)
        state.hw[msg.stream] = (msg.epoch, new_hw)
        await reply(wire.Ack(msg.stream, msg.epoch, new_hw, self.credit))
        if msg.stream == META_STREAM:
            state.meta_checked = True
        await self._fanout.records(
            gateway, msg.stream, msg.epoch, new_hw - fresh + 1, msg.records[msg.count - fresh :]
        )

    async def _on_drop(self, gateway: str, msg: wire.Drop, reply: _Reply) -> None:
        state = self._state(gateway)
        self._check_stream(state, msg.stream)
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
            self._warn(
                "drop",
                "cloud: %s/%s epoch %d: seqs %d..%d dropped at the gateway (%s)",
                gateway, msg.stream, msg.epoch, hw + 1, msg.last, msg.reason,
            )  # fmt: skip
            self._hw.put((gateway, msg.stream, msg.epoch), msg.last)
            state.hw[msg.stream] = (msg.epoch, msg.last)
            await self._fanout.gap(gateway, msg.stream, msg.epoch, hw + 1, msg.last, msg.reason)
            hw = msg.last
        await reply(wire.Ack(msg.stream, msg.epoch, hw, self.credit))

    # --- alarms and a lost store ---------------------------------------------------------------

    async def _alarm(self, gateway: str, kind: str, detail: str) -> None:
        """Logged at error, stored (``alarms`` table) and published on PUB (topic
        ``<gateway>/!alarm``, or ``!alarm`` for the receiver itself)."""
        _log.error("cloud: ALARM %s %s: %s", kind, gateway or "(receiver)", detail)
        try:
            await self._store_call(self.store.alarm, gateway, kind, detail)
        except Exception as exc:  # the alarm is still logged and published
            _log.error("cloud: could not store the %s alarm: %s", kind, exc)
        await self._fanout.alarm(gateway, kind, detail, self._clock())

    async def _store_lost(self, exc: StoreReplaced, retry: bool = False) -> None:
        """The store file went away under us: acknowledge nothing from it, reopen at its path,
        and announce what it had acknowledged (gateways deleted those records) as lost."""
        if not retry:
            self.store_replaced += 1
            _log.error("cloud: %s; nothing more is acknowledged from it; reopening", exc)
            self._hw.clear()
            for state in self._gateways.values():
                state.meta_checked = False  # the new store may lack point models: ask again
        try:
            lost = await self._store_call(self.store.reopen)
        except Exception as err:
            self._warn("reopen", "cloud: cannot open the store: %s; acknowledging nothing", err)
            self._store_failed = (exc, time.monotonic() + 1.0)
            return
        self._store_failed = None
        gaps = await self._store_call(record_lost, self.store, lost, exc.unacked)
        seqs = sum(b - a + 1 for _, _, _, a, b in gaps)
        self.store_lost_seqs += seqs
        await self._alarm(
            "", "store_replaced",
            f"{exc}; {seqs} acknowledged seqs in {len(gaps)} streams were in it and are "
            f"recorded as '{STORE_LOST}' gaps",
        )  # fmt: skip
        for gw, stream, epoch, first, last in gaps:
            await self._fanout.gap(gw, stream, epoch, first, last, STORE_LOST)
        for gw, state in list(self._gateways.items()):  # HELLO asks the others when they return
            if self._sessions.connected(gw) and META_STREAM in state.hw:
                await self._check_meta(gw, state)

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
        a repeated ``command_id`` is the same command (the gateway executes it once). Raises
        :class:`LimitExceeded` when too many commands are waiting for an answer.
        """
        return await self._downlink.command(gateway, kind, args, command_id, timeout)


_Reply = Callable[[wire.Message], Awaitable[None]]


def _port0(endpoint: str) -> str:
    """Accept ``tcp://host:0`` for "any free port" (ZeroMQ spells it ``*``)."""
    return (
        endpoint[:-2] + ":*"
        if endpoint.startswith("tcp://") and endpoint.endswith(":0")
        else endpoint
    )
