"""The uplink's session with the cloud: HELLO/WELCOME, the send window, ACK/NACK, DROP, and
downlink commands. A mixin of :class:`gateway.uplink.client.Uplink`, which owns the queue, the
writer and the counters this code reads and updates; see client.py for the whole picture.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from gateway.config import UplinkConfig
from gateway.uplink import cmdargs, keys, wire
from gateway.uplink.outbox import next_message
from gateway.uplink.queue import DurableQueue, QueueError, StreamInfo
from gateway.uplink.writer import GroupCommitWriter

_log = logging.getLogger("gateway.uplink.client")

PRIORITY_STREAM = "events"
PROBLEM_REPEAT_S = 60.0  # the same damage alarm (rule, stream) at most this often

#: ``handler(kind, args) -> (outcome, detail)`` executes a downlink command (see Runtime).
CommandHandler = Callable[[str, dict[str, Any]], Awaitable[tuple[str, str]]]

#: ``on_problem(alarm, severity, message)``: the uplink found damage (a corrupt record, lost
#: records); the runtime raises it as a local alarm upstream.
ProblemHandler = Callable[[str, str, str], None]


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


class SessionMixin:
    """Sender task, reader loop and command execution of one :class:`Uplink`."""

    # Set by Uplink.__init__/start (declared here for the type checker).
    config: UplinkConfig
    gateway_id: str
    command_handler: CommandHandler | None
    on_problem: ProblemHandler | None
    _curve: tuple[keys.KeyPair, bytes] | None
    _queue: DurableQueue | None
    _writer: GroupCommitWriter | None
    _sock: zmq.asyncio.Socket | None
    _tx: dict[str, _Tx]
    _rotating: set[str]
    _reconciled: set[tuple[str, int]]
    _sent_hw: dict[str, tuple[int, int]]
    _wake: asyncio.Event
    _command_tasks: set[asyncio.Task[None]]
    _problem_at: dict[tuple[str, str], float]
    _damage: dict[str, int]
    _damage_hw: dict[tuple[str, int, str], int]
    _endpoint: str
    _link: str
    _credit: int
    _progress_at: float
    _rr: int
    _loss_events: int
    _read_errors: int
    _read_error: str | None
    _epoch_rotations: int
    _drops_sent: int
    _retransmits: int
    _sent: int
    _acks: int
    _nacks: int
    _reconnects: int
    _commands_run: int
    _commands_dup: int

    def _problem(self, alarm: str, stream: str, message: str, force: bool = False) -> None:
        """Log and report damage; the same (alarm, stream) at most every PROBLEM_REPEAT_S."""
        now = time.monotonic()
        key = (alarm, stream)
        if not force and now - self._problem_at.get(key, -1e18) < PROBLEM_REPEAT_S:
            return
        self._problem_at[key] = now
        _log.critical("%s: %s", alarm, message)
        if self.on_problem is not None:
            try:
                self.on_problem(alarm, "critical", message)
            except Exception:  # a broken callback must not end the sender
                _log.exception("uplink on_problem callback failed")

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
            except (sqlite3.Error, QueueError, OSError) as exc:
                # The queue file cannot be read now (I/O error, read-only remount): keep the
                # sender alive, report it, retry with backoff; records wait on disk.
                self._read_errors += 1
                self._read_error = f"{type(exc).__name__}: {exc}"
                if self._read_errors == 1 or self._read_errors % 60 == 0:
                    _log.error("uplink queue read failed (%s); retrying", exc)
                failover = False
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
        hello = wire.Hello(
            self.gateway_id,
            {s: i.epoch for s, i in infos.items()},
            {s: i.next_seq - 1 for s, i in infos.items()},  # the backlog the cloud shows
        )
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
        self._read_error = None
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
        assert self._writer is not None and self._queue is not None
        last = info.next_seq - 1
        opened = self._queue.opened.get(stream)
        if (stream, info.epoch) not in self._reconciled and (
            opened is not None and opened.epoch == info.epoch
        ):
            # Until the cloud has confirmed this epoch once, only the seqs the file held at
            # open are its own: records appended since then took seqs after them, and if the
            # cloud holds more, those seqs are taken (the file lost commits it had sent).
            last = opened.next_seq - 1
        if cloud_hw > last:
            # The file lost accepted records (deleted WAL, restored copy): the cloud has this
            # epoch up to cloud_hw, the file only up to `last`. Records after cloud_hw that were
            # never sent are gone; newer records must not reuse the cloud's seqs. Drop what
            # the cloud has and renumber the rest into a fresh epoch.
            self._loss_events += 1
            self._problem(
                "uplink_queue_lost", stream,
                f"stream {stream!r} epoch {info.epoch}: the cloud holds seqs up to {cloud_hw} but "
                f"the queue file only up to {last}: it lost accepted records (deleted WAL or an "
                f"old copy); any not yet sent are gone; unsent records continue in a new epoch",
                force=True,
            )  # fmt: skip
            self._rotate(stream, acked=last)
            return
        if cloud_hw < info.acked_hw:
            # The cloud's history is not ours (wiped cloud store): replay the unacked records as
            # a fresh epoch rather than lose or merge them.
            _log.error(
                "stream %r epoch %d: cloud hw %d below local acked %d; new epoch",
                stream, info.epoch, cloud_hw, info.acked_hw,
            )  # fmt: skip
            self._rotate(stream)
            return
        self._reconciled.add((stream, info.epoch))
        if cloud_hw > info.acked_hw:
            self._writer.ack(stream, cloud_hw)
        old = self._sent_hw.get(stream)
        sent = old[1] if old is not None and old[0] == info.epoch else 0
        self._tx[stream] = _Tx(info.epoch, cloud_hw, cloud_hw + 1, max_sent=max(sent, cloud_hw))

    def _rotate(self, stream: str, acked: int = 0) -> None:
        assert self._writer is not None
        self._epoch_rotations += 1
        self._rotating.add(stream)
        self._writer.rotate(stream, acked)

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
                nxt = next_message(
                    self._queue, stream, tx.epoch, tx.next_send, info.next_seq, window
                )
                if nxt is None:
                    break
                msg = nxt.msg
                if nxt.damage is not None:
                    self._count_damage(stream, tx.epoch, msg)
                if self._in_flight() == 0:
                    self._progress_at = asyncio.get_running_loop().time()
                # State first, then the send: while the send awaits, the reader may already
                # process this message's ACK or a NACK that rewinds next_send; both must see it.
                if isinstance(msg, wire.Drop):
                    self._drops_sent += 1
                    last, window = msg.last, window - 1
                else:
                    last = msg.last_seq
                    self._retransmits += max(0, min(last, tx.max_sent) - tx.next_send + 1)
                    self._sent += msg.count
                    window -= msg.count
                tx.max_sent = max(tx.max_sent, last)
                self._sent_hw[stream] = (tx.epoch, tx.max_sent)
                tx.next_send = last + 1
                await self._send(sock, msg)

    def _count_damage(self, stream: str, epoch: int, drop: wire.Data | wire.Drop) -> None:
        """Count seqs found corrupt/lost once (resends after a reconnect see them again)."""
        assert isinstance(drop, wire.Drop)
        key = (stream, epoch, drop.reason)
        done = self._damage_hw.get(key, 0)
        if drop.last <= done:
            return
        self._damage_hw[key] = drop.last
        self._damage[drop.reason] += drop.last - max(drop.first, done + 1) + 1
        alarm = "uplink_queue_corrupt_record" if drop.reason == "corrupt" else "uplink_queue_lost"
        what = "failed their checksum" if drop.reason == "corrupt" else "are missing from the file"
        self._problem(
            alarm, stream,
            f"stream {stream!r} epoch {epoch}: seqs {drop.first}..{drop.last} {what}; not sent, "
            f"announced as a gap ({self._damage[drop.reason]} {drop.reason} so far)",
        )  # fmt: skip

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
        prior = None
        if refused:
            _log.warning("command %s refused: %s", what, refused)
            outcome, detail = "failed", refused
        else:
            try:
                prior = await asyncio.to_thread(queue.command_begin, cmd.id, cmd.kind)
            except (sqlite3.Error, QueueError) as exc:
                # Not logged as begun, so not run (it could run twice otherwise): the cloud
                # resends it after our next HELLO, when the disk may take the write again.
                _log.error("command %s not run: the queue cannot record it (%s)", what, exc)
                return
            if prior is not None:
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
                try:
                    await asyncio.to_thread(queue.command_end, cmd.id, outcome, detail)
                except (sqlite3.Error, QueueError) as exc:  # a resend is answered "interrupted"
                    _log.error("command %s outcome not recorded (%s)", what, exc)
                _log.info("command %s: %s", what, outcome)  # never the detail: it may echo args
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
