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

Damage is announced, never silent: a record whose accept-time CRC no longer matches is sent as
a ``corrupt`` gap (outbox.py), accepted records the queue file lost (found at open, or when the
cloud's hw for the file's own epoch is beyond what the file ever assigned) as a ``lost`` gap or
a new epoch; each raises an alarm through ``on_problem``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from gateway.config import UplinkConfig
from gateway.uplink import keys, wire
from gateway.uplink.outbox import DATA_MAX_BYTES, DATA_MAX_RECORDS
from gateway.uplink.queue import (
    DurableQueue,
    QueueError,
    QueueUnavailable,
    Quota,
    StreamInfo,
    describe,
    open_or_quarantine,
    peek_state,
)
from gateway.uplink.sender import (
    PRIORITY_STREAM,
    CommandHandler,
    ProblemHandler,
    SessionMixin,
    _Tx,
)
from gateway.uplink.writer import CommitResult, GroupCommitWriter

__all__ = [
    "DATA_MAX_BYTES", "DATA_MAX_RECORDS", "PRIORITY_STREAM", "CommandHandler", "ProblemHandler",
    "Uplink", "UplinkError",
]  # fmt: skip

_log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # seconds stop() waits for the final commit


class UplinkError(RuntimeError):
    """Misconfiguration or misuse of the uplink."""


class Uplink(SessionMixin):
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
    on_problem
        Told of damage found in the queue (alarms ``uplink_queue_corrupt_record``,
        ``uplink_queue_lost``); also counted in :meth:`stats`.
    """

    def __init__(
        self,
        config: UplinkConfig,
        gateway_id: str,
        clock: Callable[[], float] = time.time,
        command_handler: CommandHandler | None = None,
        on_problem: ProblemHandler | None = None,
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
        self.on_problem = on_problem
        self._problem_at: dict[tuple[str, str], float] = {}
        self._damage: dict[str, int] = {"corrupt": 0, "lost": 0}  # seqs announced, by reason
        self._damage_hw: dict[tuple[str, int, str], int] = {}  # counted up to, per stream/epoch
        self._loss_events = 0
        self._read_errors = 0
        self._read_error: str | None = None
        self._reconciled: set[tuple[str, int]] = set()  # (stream, epoch) checked against a WELCOME
        self._early_states: dict[str, bytes] = {}
        self._release_pending = False
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
        self._valid_streams: set[str] = set()
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
        try:
            queue, self.quarantined = await asyncio.to_thread(
                open_or_quarantine, self.config.queue, self._clock, self._quota
            )
        except QueueUnavailable as exc:
            raise UplinkError(str(exc)) from None
        self._queue = queue
        self._reconciled.clear()
        cap = max(10 * self.config.batch_max_records, 100_000)
        self._writer = GroupCommitWriter(
            queue,
            asyncio.get_running_loop(),
            self._on_commit,
            self.config.batch_max_records,
            self.config.batch_max_delay,
            cap,
            self._clock,
            max_bytes=self.config.buffer_bytes,
        )
        if self._early_states:
            for key, value in self._early_states.items():
                self._writer.stage_state(key, value)
            self._writer.release_states()
            self._early_states.clear()
        self._writer.start()
        self._sender = asyncio.create_task(self._sender_main(), name="uplink-sender")
        for loss in queue.losses:
            self._loss_events += 1
            if loss.stream:
                self._damage["lost"] += loss.last - loss.first + 1
            self._problem("uplink_queue_lost", loss.stream, describe(loss), force=True)

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
            self._writer.release_states()
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
        self._check_stream(stream)
        if self._blocked(stream):
            self._writer.refuse(stream, "blocked")
            return False
        return self._writer.submit(stream, bytes(payload))

    def submit_many(self, stream: str, payloads: list[bytes]) -> int:
        """Queue several records of one stream at once (cheaper per record); returns how many
        were taken. The rest were refused like :meth:`submit` refuses (counted, announced)."""
        if self._writer is None:
            raise UplinkError("uplink not started")
        self._check_stream(stream)
        if self._blocked(stream):
            self._writer.refuse(stream, "blocked", len(payloads))
            return 0
        return self._writer.submit_many(stream, [bytes(p) for p in payloads])

    def _check_stream(self, stream: str) -> None:
        """A name the cloud would refuse (wire rules) raises ValueError here, before anything is
        queued under it: queued records would otherwise be stranded. Valid names are cached."""
        if stream not in self._valid_streams:
            wire.check_stream_name(stream)
            if len(self._valid_streams) < 1024:
                self._valid_streams.add(stream)

    def accepting(self, stream: str) -> bool:
        """False while producers of ``stream`` must back off (see :meth:`refusal`)."""
        return self.refusal(stream) is None

    def refusal(self, stream: str) -> str | None:
        """Why a new record of ``stream`` would be turned away now, else None: ``blocked``
        (at its quota under policy ``block``) or ``backpressure`` (``uplink.buffer_bytes`` are
        waiting for the disk). A producer then drops at the source and calls :meth:`refuse`."""
        if self._writer is not None and self._writer.full:
            return "backpressure"
        return "blocked" if self._blocked(stream) else None

    def _blocked(self, stream: str) -> bool:
        """``stream`` is at its quota under policy ``block``."""
        q, queue, writer = self._quota, self._queue, self._writer
        if q is None or q.policy != "block" or queue is None or writer is None:
            return False
        return queue.info(stream).bytes + writer.pending_bytes(stream) >= q.max_bytes

    def refuse(self, stream: str, reason: str, n: int = 1) -> None:
        """Count ``n`` records a producer dropped at the source (``reason`` as :meth:`refusal`
        said); the next commit gives them seqs in one gap row, announced upstream as DROP."""
        if self._writer is None:
            raise UplinkError("uplink not started")
        if not wire.REASON_RE.fullmatch(reason):
            raise ValueError(f"drop reason {reason!r} must match {wire.REASON_RE.pattern}")
        self._writer.refuse(stream, reason, n)

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

    def stage_state(self, key: str, value: bytes) -> None:
        """Commit ``value`` under ``key`` together with the records submitted from now to the
        end of this event-loop turn (one transaction: a crash keeps both or neither).

        For state that must agree with records, e.g. the alarm state and its alarm events.
        Before :meth:`start` the value waits for the first commit. Never blocks, never raises
        an I/O error: a failed commit keeps it in memory and retries.
        """
        if self._writer is None:
            self._early_states[key] = value
            return
        self._writer.stage_state(key, value)
        if self._release_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._writer.release_states()
            return
        self._release_pending = True
        loop.call_soon(self._release_states)

    def _release_states(self) -> None:
        self._release_pending = False
        if self._writer is not None:
            self._writer.release_states()

    def load_state(self, key: str) -> bytes | None:
        """The value committed under ``key`` (staged values first); works before :meth:`start`
        by reading the queue file read-only. None when there is none or the file is unreadable
        (then :meth:`start` reports why)."""
        if key in self._early_states:
            return self._early_states[key]
        if self._queue is not None:
            return self._queue.get_state(key)
        return peek_state(self.config.queue, key)

    @property
    def io_error(self) -> str | None:
        """Why the queue cannot be written or read right now (None: it can). For /health."""
        w = self._writer
        if w is not None and w.io_error is not None:
            return w.io_error
        return self._read_error

    @property
    def healthy(self) -> bool:
        """False while the queue's commits or reads fail (records wait in memory)."""
        return self.io_error is None

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

    # --- observability -------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """Snapshot for metrics and ``/status``.

        ``link`` ("connected"/"connecting"/"down"), ``endpoint``, ``streams`` {stream: depth
        (queued, not acked), next_seq, acked_hw, epoch, bytes}; totals: submitted, committed,
        dropped (all reasons) and dropped_by {overflow, blocked, backpressure, quota, corrupt,
        lost},
        drops_sent (DROP messages), commands, commands_duplicate, secure, quarantined, pending
        (in memory), pending_bytes (what they hold, bounded by buffer_bytes), write_errors, read_errors, io_error (why the queue cannot be written or
        read now, else None), healthy, corrupt_records and lost_records (seqs announced as such
        gaps), loss_events (losses detected), sent, acks, nacks, retransmits, reconnects,
        epoch_rotations, in_flight, credit, commit_batches, last_commit_ms, oldest_age_s
        (oldest queued record; 0 when empty).
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
                try:
                    ts = queue.oldest_ts(stream)
                except (sqlite3.Error, QueueError):
                    continue  # stats must not fail while the file is unreadable
                if ts is not None and (oldest is None or ts < oldest):
                    oldest = ts
        writer = self._writer
        dropped_by = dict(writer.dropped_by) if writer else dict(self._final_dropped_by)
        if quota_dropped:
            dropped_by["quota"] = sum(quota_dropped.values())
        for reason, n in self._damage.items():
            if n:
                dropped_by[reason] = n
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
            "pending_bytes": writer.buffered if writer else 0,
            "buffer_bytes": self.config.buffer_bytes,
            "write_errors": writer.errors if writer else self._final_writer[2],
            "read_errors": self._read_errors,
            "io_error": self.io_error,
            "healthy": self.healthy,
            "corrupt_records": self._damage["corrupt"],
            "lost_records": self._damage["lost"],
            "loss_events": self._loss_events,
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
