"""Uplink: the gateway side of store-and-forward.

``submit`` hands a record to the group-commit writer thread (gateway.uplink.writer); once the
DurableQueue transaction holding it is fsync'd the record is *accepted*. A sender task on the
event loop owns one ZeroMQ DEALER at a time: HELLO -> WELCOME (the cloud's hw per stream), then
DATA from hw + 1 within a credit window, cumulative ACKs delete acked records from the queue.
Any failure (no WELCOME, no ACK progress within ``ack_timeout``, ERROR) closes the socket
(LINGER 0), moves to the next endpoint and replays from the cloud's hw. Deliberate holes (quota,
refused records) go upstream as DROP. Downlink commands (CMD) are executed at most once per id
(the queue file logs them) and answered with RESULT. The link is CurveZMQ unless the config says
``insecure: true``. Protocol: docs/store-and-forward.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from gateway.config import UplinkConfig
from gateway.uplink import cmdargs, keys, wire
from gateway.uplink.queue import DurableQueue, Quota, StreamInfo, open_or_quarantine
from gateway.uplink.writer import CommitResult, GroupCommitWriter

_log = logging.getLogger(__name__)

PRIORITY_STREAM = "events"
DATA_MAX_RECORDS = 1000  # records per DATA message
DATA_MAX_BYTES = 1 << 20  # payload bytes per DATA message (a single larger record still goes)
STOP_TIMEOUT = 10.0  # seconds stop() waits for the final commit


class UplinkError(RuntimeError):
    """Misconfiguration or misuse of the uplink."""


#: ``handler(kind, args) -> (outcome, detail)`` executes a downlink command (see Runtime).
CommandHandler = Callable[[str, dict[str, Any]], Awaitable[tuple[str, str]]]


class _SessionEnd(Exception):
    def __init__(self, reason: str, failover: bool) -> None:
        super().__init__(reason)
        self.failover = failover  # True: try the next endpoint; False: same endpoint again


@dataclass(slots=True)
class _Tx:
    """Send state of one stream within the current session."""

    epoch: int
    cloud_hw: int  # the cloud has committed every seq <= cloud_hw
    next_send: int
    max_sent: int = 0  # highest seq sent in this epoch, across sessions (counts retransmits)
    rewound_to: int | None = None


class Uplink:
    """Durable, acknowledged uplink of opaque records per named stream.

    Parameters
    ----------
    config
        Endpoints, queue file, group-commit and window settings.
    gateway_id
        The name the gateway announces in HELLO; with CurveZMQ also the name of its key pair
        (``<key_dir>/<gateway_id>.key_secret``), which the cloud's allow-list must map to it.
    clock
        Wall clock for record timestamps and ``oldest_age_s``.
    command_handler
        Executes downlink commands other than ``ping``; None answers them ``unsupported``.
    """

    def __init__(
        self,
        config: UplinkConfig,
        gateway_id: str,
        clock: Callable[[], float] = time.time,
        command_handler: CommandHandler | None = None,
    ) -> None:
        self._curve: tuple[keys.KeyPair, bytes] | None = None
        if not config.insecure:
            if not config.server_key or not config.key_dir:
                raise UplinkError(
                    "CurveZMQ needs uplink.server_key (the cloud's public key file) and "
                    "uplink.key_dir (this gateway's key pair; create it with `gateway keys new "
                    f"--dir DIR --name {gateway_id}`), or insecure: true for plaintext TCP"
                )
            try:
                own = keys.load_secret(os.path.join(config.key_dir, f"{gateway_id}.key_secret"))
                server = keys.load(config.server_key)
            except keys.KeyError_ as exc:
                raise UplinkError(f"uplink keys: {exc}") from None
            self._curve = (own, server.public)
        if config.stream_max_bytes is not None and config.stream_max_bytes < 1:
            raise UplinkError("uplink.stream_max_bytes must be >= 1 (or null for no limit)")
        if config.quota_policy not in ("block", "drop_oldest"):
            raise UplinkError("uplink.quota_policy must be block or drop_oldest")
        if not config.endpoints:
            raise UplinkError("uplink.endpoints is empty")
        if config.batch_max_records < 1 or config.batch_max_delay < 0:
            raise UplinkError("uplink.batch_max_records must be >= 1 and batch_max_delay >= 0")
        if config.ack_timeout <= 0 or config.max_in_flight < 1:
            raise UplinkError("uplink.ack_timeout must be > 0 and max_in_flight >= 1")
        if not gateway_id:
            raise UplinkError("gateway id is empty")
        self.config = config
        self.gateway_id = gateway_id
        self.command_handler = command_handler
        self._quota = (
            Quota(config.stream_max_bytes, config.quota_policy)
            if config.stream_max_bytes is not None
            else None
        )
        #: Where a corrupt queue file was moved at start (None: it was fine).
        self.quarantined: str | None = None
        self._clock = clock
        self._queue: DurableQueue | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._commands_run = 0
        self._commands_dup = 0
        self._drops_sent = 0
        self._final_infos: dict[str, StreamInfo] = {}
        self._final_writer = (0, 0, 0)  # submitted, dropped, errors of the last writer
        self._final_dropped_by: dict[str, int] = {}
        self._final_quota: dict[str, int] = {}
        self._writer: GroupCommitWriter | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._tx: dict[str, _Tx] = {}
        self._rotating: set[str] = set()
        self._sent_hw: dict[str, tuple[int, int]] = {}  # stream -> (epoch, highest seq sent)
        self._credit = 0
        self._progress_at = 0.0
        self._link = "down"
        self._endpoint = config.endpoints[0]
        self._rr = 0  # round-robin start among non-priority streams
        self._committed = 0
        self._commit_batches = 0
        self._last_commit_ms = 0.0
        self._sent = 0
        self._acks = 0
        self._nacks = 0
        self._retransmits = 0
        self._reconnects = 0
        self._epoch_rotations = 0

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (create) the queue, start the writer thread and the sender task."""
        if self._queue is not None:
            raise UplinkError("uplink already started")
        if self._curve is None:
            _log.warning(
                "INSECURE UPLINK: plaintext, unauthenticated ZeroMQ to %s (uplink.insecure: true); "
                "anyone on the path can read and forge this gateway's data",
                ", ".join(self.config.endpoints),
            )
        queue, self.quarantined = await asyncio.to_thread(
            open_or_quarantine, self.config.queue, self._clock, self._quota
        )
        self._queue = queue
        cap = max(10 * self.config.batch_max_records, 100_000)
        self._writer = GroupCommitWriter(
            queue,
            asyncio.get_running_loop(),
            self._on_commit,
            self.config.batch_max_records,
            self.config.batch_max_delay,
            cap,
            self._clock,
        )
        self._writer.start()
        self._sender = asyncio.create_task(self._sender_main(), name="uplink-sender")

    async def stop(self) -> None:
        """Make everything submitted durable (bounded by STOP_TIMEOUT), then close cleanly."""
        for t in list(self._command_tasks):
            t.cancel()
        if self._command_tasks:
            await asyncio.gather(*self._command_tasks, return_exceptions=True)
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except asyncio.CancelledError:
                pass
            self._sender = None
        if self._writer is not None:
            done = await asyncio.to_thread(self._writer.stop, STOP_TIMEOUT)
            w = self._writer
            self._final_writer = (w.submitted, w.dropped, w.errors)
            self._final_dropped_by = dict(w.dropped_by)
            if not done:
                _log.error(
                    "uplink writer did not finish within %.0fs; records may be lost", STOP_TIMEOUT
                )
            self._writer = None
        for _, fut in self._flush_waiters:
            if not fut.done():
                fut.set_exception(UplinkError("uplink stopped before the flush completed"))
        self._flush_waiters.clear()
        if self._queue is not None:
            self._final_infos = self._queue.infos()  # stats() after stop still reports them
            self._final_quota = dict(self._queue.quota_dropped)
            await asyncio.to_thread(self._queue.close)
            self._queue = None
        self._link = "down"

    def submit(self, stream: str, payload: bytes) -> bool:
        """Queue a record; it is accepted once committed (see module docstring). Never blocks.

        False when it was refused: the stream is at its quota with policy ``block``, or the
        in-memory cap is reached (disk full or too slow). Refusals are counted and announced
        upstream as a gap.
        """
        if self._writer is None:
            raise UplinkError("uplink not started")
        if not stream:
            raise ValueError("stream name must not be empty")
        if not self.accepting(stream):
            self._writer.refuse(stream, "blocked")
            return False
        return self._writer.submit(stream, bytes(payload))

    def submit_many(self, stream: str, payloads: list[bytes]) -> int:
        """Queue several records of one stream at once (cheaper per record); returns how many
        were taken. The rest were refused like :meth:`submit` refuses (counted, announced)."""
        if self._writer is None:
            raise UplinkError("uplink not started")
        if not stream:
            raise ValueError("stream name must not be empty")
        if not self.accepting(stream):
            for _ in payloads:
                self._writer.refuse(stream, "blocked")
            return 0
        return self._writer.submit_many(stream, [bytes(p) for p in payloads])

    def accepting(self, stream: str) -> bool:
        """False while ``stream`` is at its quota under policy ``block`` (producers back off)."""
        q, queue, writer = self._quota, self._queue, self._writer
        if q is None or q.policy != "block" or queue is None or writer is None:
            return True
        return queue.info(stream).bytes + writer.pending_bytes(stream) < q.max_bytes

    async def flush(self) -> None:
        """Return once everything submitted so far is fsync'd."""
        if self._writer is None:
            raise UplinkError("uplink not started")
        target = self._writer.urge()
        if self._committed >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, fut))
        await fut

    def _on_commit(self, result: CommitResult) -> None:
        self._committed += result.records
        if result.records:
            self._commit_batches += 1
            self._last_commit_ms = result.elapsed_ms
        for stream in result.rotated:
            self._rotating.discard(stream)
            self._tx.pop(stream, None)
        waiting = []
        for target, fut in self._flush_waiters:
            if self._committed >= target:
                if not fut.done():
                    fut.set_result(None)
            else:
                waiting.append((target, fut))
        self._flush_waiters = waiting
        self._wake.set()

    # --- sender --------------------------------------------------------------------------------

    async def _sender_main(self) -> None:
        index = 0
        backoff = 0.05
        while True:
            self._endpoint = self.config.endpoints[index % len(self.config.endpoints)]
            sock = self._open_socket(self._endpoint)
            failover = True
            try:
                await self._session(sock)
            except _SessionEnd as end:
                _log.warning("uplink session with %s ended: %s", self._endpoint, end)
                failover = end.failover
            except (zmq.ZMQError, wire.WireError) as exc:
                _log.warning("uplink session with %s failed: %s", self._endpoint, exc)
            finally:
                sock.close(linger=0)
                welcomed = self._link == "connected"
                self._link = "down"
            self._reconnects += 1
            if failover:
                index += 1
            if welcomed:
                backoff = 0.05
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, min(self.config.ack_timeout, 5.0))

    def _open_socket(self, endpoint: str) -> zmq.asyncio.Socket:
        sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        hb_ms = max(100, int(self.config.ack_timeout * 1000 / 3))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not connected
        sock.setsockopt(zmq.HEARTBEAT_IVL, hb_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * hb_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * hb_ms)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
        if self._curve is not None:
            own, server_public = self._curve
            assert own.secret is not None
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)  # pinned: no other cloud
            sock.setsockopt(zmq.CURVE_PUBLICKEY, own.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
        sock.connect(endpoint)
        return sock

    async def _session(self, sock: zmq.asyncio.Socket) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        timeout = self.config.ack_timeout
        self._link = "connecting"
        self._sock = sock
        self._tx.clear()
        infos = self._queue.infos()
        hello = wire.Hello(self.gateway_id, {s: i.epoch for s, i in infos.items()})
        try:
            await asyncio.wait_for(sock.send_multipart(wire.encode(hello)), timeout)
            frames = await asyncio.wait_for(sock.recv_multipart(), timeout)
        except TimeoutError:
            hint = " (wrong server key or not in the cloud's allow-list?)" if self._curve else ""
            raise _SessionEnd(f"no WELCOME within {timeout}s{hint}", failover=True) from None
        msg = wire.decode(frames)
        if isinstance(msg, wire.Error):
            raise _SessionEnd(f"ERROR {msg.code}: {msg.reason}", failover=True)
        if not isinstance(msg, wire.Welcome):
            raise _SessionEnd(f"expected WELCOME, got {type(msg).__name__}", failover=True)
        self._link = "connected"
        self._credit = msg.credit
        for stream, info in infos.items():
            epoch, hw = msg.hw.get(stream, (info.epoch, 0))
            self._adopt(stream, info, hw if epoch == info.epoch else 0)
        self._progress_at = loop.time()
        reader = asyncio.create_task(self._read_loop(sock))
        try:
            while True:
                self._wake.clear()
                await self._pump(sock)
                wait: float | None = None
                if self._in_flight() > 0:
                    wait = self._progress_at + timeout - loop.time()
                    if wait <= 0:
                        raise _SessionEnd(f"no ACK progress within {timeout}s", failover=True)
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({waker, reader}, timeout=wait, return_when="FIRST_COMPLETED")
                waker.cancel()
                if reader.done():
                    reader.result()  # re-raises _SessionEnd / errors
                    raise _SessionEnd("reader ended", failover=False)
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass

    def _adopt(self, stream: str, info: StreamInfo, cloud_hw: int) -> None:
        """Start a stream's send state from the cloud's hw, or rotate its epoch on a conflict."""
        assert self._writer is not None
        last = info.next_seq - 1
        if cloud_hw > last or cloud_hw < info.acked_hw:
            # The cloud's history of this epoch is not ours (restored queue file, wiped cloud
            # store): replay the unacked records as a fresh epoch rather than lose or merge them.
            _log.error(
                "stream %r epoch %d: cloud hw %d vs local acked %d / last %d; new epoch",
                stream, info.epoch, cloud_hw, info.acked_hw, last,
            )  # fmt: skip
            self._epoch_rotations += 1
            self._rotating.add(stream)
            self._writer.rotate(stream)
            return
        if cloud_hw > info.acked_hw:
            self._writer.ack(stream, cloud_hw)
        old = self._sent_hw.get(stream)
        sent = old[1] if old is not None and old[0] == info.epoch else 0
        self._tx[stream] = _Tx(info.epoch, cloud_hw, cloud_hw + 1, max_sent=max(sent, cloud_hw))

    def _in_flight(self) -> int:
        return sum(t.next_send - 1 - t.cloud_hw for t in self._tx.values())

    async def _pump(self, sock: zmq.asyncio.Socket) -> None:
        """Send DATA while the window allows: the priority stream first, others round-robin."""
        assert self._queue is not None
        infos = self._queue.infos()
        window = min(self.config.max_in_flight, self._credit) - self._in_flight()
        if window <= 0:
            return
        others = sorted(s for s in infos if s != PRIORITY_STREAM)
        if others:
            self._rr = (self._rr + 1) % len(others)
            others = others[self._rr :] + others[: self._rr]
        order = ([PRIORITY_STREAM] if PRIORITY_STREAM in infos else []) + others
        for stream in order:
            if stream in self._rotating:
                continue
            info = infos[stream]
            tx = self._tx.get(stream)
            if tx is None or tx.epoch != info.epoch:
                # A stream born (or re-epoched) after the HELLO: the cloud has nothing of it.
                tx = self._tx[stream] = _Tx(info.epoch, info.acked_hw, info.acked_hw + 1)
            while window > 0 and tx.next_send < info.next_seq:
                n = min(window, DATA_MAX_RECORDS, info.next_seq - tx.next_send)
                rows = self._queue.read(stream, tx.next_send - 1, n)
                if not rows or rows[0][0] != tx.next_send:
                    gap = self._queue.gap_at(stream, tx.next_send)
                    if gap is None:
                        _log.error("stream %r: seq %d missing from the queue", stream, tx.next_send)
                        break
                    drop = wire.Drop(stream, tx.epoch, tx.next_send, gap.last, gap.reason)
                    self._drops_sent += 1
                    tx.max_sent = max(tx.max_sent, gap.last)
                    self._sent_hw[stream] = (tx.epoch, tx.max_sent)
                    tx.next_send = gap.last + 1
                    window -= 1
                    await self._send(sock, drop)
                    continue
                payloads: list[bytes] = []
                size = 0
                for _, payload in rows:
                    if payloads and size + len(payload) > DATA_MAX_BYTES:
                        break
                    payloads.append(payload)
                    size += len(payload)
                if self._in_flight() == 0:
                    self._progress_at = asyncio.get_running_loop().time()
                data = wire.Data.build(stream, tx.epoch, tx.next_send, payloads)
                # State first, then the send: while the send awaits, the reader may already
                # process this DATA's ACK or a NACK that rewinds next_send; both must see it sent.
                last = tx.next_send + len(payloads) - 1
                self._retransmits += max(0, min(last, tx.max_sent) - tx.next_send + 1)
                tx.max_sent = max(tx.max_sent, last)
                self._sent_hw[stream] = (tx.epoch, tx.max_sent)
                tx.next_send = last + 1
                self._sent += len(payloads)
                window -= len(payloads)
                await self._send(sock, data)

    async def _send(self, sock: zmq.asyncio.Socket, msg: wire.Message) -> None:
        timeout = self.config.ack_timeout
        try:
            # IMMEDIATE: a send waits while the peer is disconnected; bound it.
            await asyncio.wait_for(sock.send_multipart(wire.encode(msg)), timeout)
        except TimeoutError:
            raise _SessionEnd(
                f"{type(msg).__name__} not sendable within {timeout}s", True
            ) from None

    async def _read_loop(self, sock: zmq.asyncio.Socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frames = await sock.recv_multipart()
            try:
                msg = wire.decode(frames)
            except wire.WireError as exc:
                _log.warning("uplink: dropping undecodable message: %s", exc)
                continue
            if isinstance(msg, wire.Ack):
                tx = self._tx.get(msg.stream)
                self._credit = msg.credit
                if tx is None or tx.epoch != msg.epoch or msg.hw <= tx.cloud_hw:
                    continue
                if msg.hw > tx.max_sent:
                    raise _SessionEnd(f"ACK {msg.stream} hw {msg.hw} beyond sent", failover=False)
                self._acks += 1
                self._advance(tx, msg.stream, msg.hw, loop.time())
            elif isinstance(msg, wire.Nack):
                tx = self._tx.get(msg.stream)
                if tx is None or tx.epoch != msg.epoch:
                    continue
                self._nacks += 1
                # Every DATA behind a lost/corrupt one is NACKed too: rewind once per point.
                if msg.expected == tx.rewound_to or msg.expected >= tx.next_send:
                    continue
                if msg.expected <= tx.cloud_hw:
                    raise _SessionEnd(f"NACK {msg.stream} below acked hw", failover=False)
                if msg.expected - 1 > tx.cloud_hw:  # the NACK also tells us the cloud's hw
                    self._advance(tx, msg.stream, msg.expected - 1, loop.time())
                tx.rewound_to = msg.expected
                tx.next_send = msg.expected
                self._wake.set()
            elif isinstance(msg, wire.Command):
                task = asyncio.create_task(self._run_command(msg))
                self._command_tasks.add(task)
                task.add_done_callback(self._command_tasks.discard)
            elif isinstance(msg, wire.Error):
                raise _SessionEnd(f"ERROR {msg.code}: {msg.reason}", failover=False)

    def _advance(self, tx: _Tx, stream: str, hw: int, now: float) -> None:
        """The cloud committed ``stream`` up to ``hw``: free the window, delete locally."""
        assert self._writer is not None
        tx.cloud_hw = hw
        tx.next_send = max(tx.next_send, hw + 1)
        tx.rewound_to = None
        self._progress_at = now
        self._writer.ack(stream, hw)
        self._wake.set()

    # --- downlink commands ---------------------------------------------------------------------

    async def _run_command(self, cmd: wire.Command) -> None:
        """Execute ``cmd`` unless its id was seen before; answer RESULT on the live session."""
        queue = self._queue
        if queue is None:
            return
        what = cmdargs.summary(cmd.id, cmd.kind, cmd.args)  # never the arguments themselves
        refused = cmdargs.refusal(cmd.id, cmd.kind)
        prior = None if refused else await asyncio.to_thread(queue.command_begin, cmd.id, cmd.kind)
        if refused:
            _log.warning("command %s refused: %s", what, refused)
            outcome, detail = "failed", refused
        elif prior is not None:
            self._commands_dup += 1
            if prior[0] == "running":
                return  # the first delivery is still executing and will answer
            outcome, detail = prior
        else:
            self._commands_run += 1
            try:
                outcome, detail = await self._execute(cmd)
            except Exception as exc:  # a handler bug must not kill the uplink
                _log.exception("command %s failed", what)
                outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
            detail = cmdargs.detail(detail)
            await asyncio.to_thread(queue.command_end, cmd.id, outcome, detail)
            _log.info("command %s: %s %s", what, outcome, detail)
        sock = self._sock
        if sock is not None and self._link == "connected":
            try:
                await sock.send_multipart(wire.encode(wire.Result(cmd.id, outcome, detail)))
            except zmq.ZMQError:
                pass  # the cloud resends the command after our next HELLO; we answer then

    async def _execute(self, cmd: wire.Command) -> tuple[str, str]:
        if cmd.kind == "ping":
            return "ok", f"pong {self.gateway_id}"
        if self.command_handler is None:
            return "unsupported", f"no handler for {cmd.kind!r} commands"
        return await self.command_handler(cmd.kind, cmd.args)

    # --- observability -------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """Snapshot for metrics and ``/status``.

        ``link`` ("connected"/"connecting"/"down"), ``endpoint``, ``streams`` {stream: depth
        (queued, not acked), next_seq, acked_hw, epoch, bytes}; totals: submitted, committed,
        dropped (all reasons) and dropped_by {overflow, blocked, quota}, drops_sent (DROP
        messages), commands, commands_duplicate, secure, quarantined, pending (in memory), write_errors, sent, acks, nacks,
        retransmits, reconnects, epoch_rotations, in_flight, credit, commit_batches,
        last_commit_ms, oldest_age_s (oldest queued record; 0 when empty).
        """
        streams: dict[str, dict[str, int]] = {}
        queue = self._queue
        quota_dropped = dict(queue.quota_dropped) if queue is not None else self._final_quota
        oldest: float | None = None
        for stream, info in (queue.infos() if queue else self._final_infos).items():
            streams[stream] = {
                "depth": info.depth,
                "next_seq": info.next_seq,
                "acked_hw": info.acked_hw,
                "epoch": info.epoch,
                "bytes": info.bytes,
            }
            if info.depth > 0 and queue is not None:
                ts = queue.oldest_ts(stream)
                if ts is not None and (oldest is None or ts < oldest):
                    oldest = ts
        writer = self._writer
        dropped_by = dict(writer.dropped_by) if writer else dict(self._final_dropped_by)
        if quota_dropped:
            dropped_by["quota"] = sum(quota_dropped.values())
        return {
            "link": self._link,
            "endpoint": self._endpoint,
            "streams": streams,
            "submitted": writer.submitted if writer else self._final_writer[0],
            "committed": self._committed,
            "dropped": sum(dropped_by.values()),
            "dropped_by": dropped_by,
            "drops_sent": self._drops_sent,
            "commands": self._commands_run,
            "commands_duplicate": self._commands_dup,
            "secure": self._curve is not None,
            "quarantined": self.quarantined,
            "pending": writer.pending if writer else 0,
            "write_errors": writer.errors if writer else self._final_writer[2],
            "sent": self._sent,
            "acks": self._acks,
            "nacks": self._nacks,
            "retransmits": self._retransmits,
            "reconnects": self._reconnects,
            "epoch_rotations": self._epoch_rotations,
            "in_flight": self._in_flight(),
            "credit": self._credit,
            "commit_batches": self._commit_batches,
            "last_commit_ms": round(self._last_commit_ms, 3),
            "oldest_age_s": 0.0 if oldest is None else max(0.0, self._clock() - oldest),
        }
