"""OpcuaDevice: an OPC UA server's variables as points, by subscription (default) or polled Read.

asyncua opens the channel and the session (:mod:`.session`); everything on the data path is
ours: one subscription per poll group with its monitored items created in bulk
(:mod:`.subscriptions`), a publish loop that keeps ``publish_requests`` PublishRequests in flight
and hands each response's bytes to the compiled decoder (``gateway.impl.opcua``), which writes
them into typed columns: one :class:`SampleBatch` per response, stamped with each value's source
timestamp (server timestamp, then receive time, when the server gives none).

A lost connection (socket closed, no PublishResponse for three keep-alive periods, a failed
Read) takes the device offline and reconnects with backoff and jitter. The same session is
re-activated on the new channel when the server still has it; otherwise a new session takes the
subscriptions over (TransferSubscriptions); otherwise they are created again. Missed
notifications are asked for with Republish while the server holds them; the rest become an
explicit gap: a BAD batch for the group's points, ``gaps`` (metric ``gateway_device_gaps_total``) and one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.drivers.base import DriverBase, Stats
from gateway.drivers.opcua import session as ses
from gateway.drivers.opcua.events import events_of
from gateway.drivers.opcua.subscriptions import (
    Group,
    SequenceTracker,
    acks_for,
    create_subscription,
    groups_of,
    parse_node,
    republish,
    transfer,
)
from gateway.drivers.opcua.writes import NodeWriter
from gateway.impl import opcua as codec

_log = logging.getLogger(__name__)
_TEXT_TYPES = (12, 21)  # String, LocalizedText: delivered as text events


class OpcuaDevice(DriverBase):
    """One OPC UA server session: the transport (asyncua's channel and session, our publish
    loop or polled Reads) and the decoder; the rest is :class:`DriverBase`'s."""

    kind = "device"
    point_key = "node"

    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.opcua is None:
            raise ValueError(f"{config.name}: driver opcua needs an opcua section")
        super().__init__(config, point_ids, on_batch, on_event, clock)
        self.opc = config.opcua
        for p in config.points:
            parse_node(p.node or "")  # a bad NodeId is a config error, not a runtime one
        ids = dict(point_ids)
        self.groups = groups_of(config, ids)
        self._trackers: dict[str, SequenceTracker] = {
            g.name: SequenceTracker() for g in self.groups
        }
        self._name_of = {pid: name for name, pid in ids.items()}
        self.decoder = codec.NotificationDecoder([(pid, pid) for pid in ids.values()])
        self._cols = self._columns(4096)
        self.writer = NodeWriter(config)
        self._client: Any = None
        self._turned = 0.0
        self._unsupported: set[str] = set()
        self._texts: dict[str, str] = {}  # point -> last text value sent
        self.polled = self.opc.mode == "poll"
        self.responses = self.rows = self.keepalives = self.republished = self.gaps = 0
        self.duplicates = self.reconnects = self.sessions_reused = self.transferred = 0
        self.recreated = self.connect_failures = self.reads = self.text_values = 0
        self.unsupported_values = self.bad_responses = self.events = 0
        self.last_error = ""

    # -- lifecycle -----------------------------------------------------------------------------
    def tasks(self) -> list[tuple[str, Any]]:
        return [("session", self._run())]

    def task_failure(self) -> str | None:
        """Why the session task ended or stopped turning."""
        why = super().task_failure()
        if why or not self._tasks or self._turned == 0.0:
            return why
        late = time.monotonic() - self._turned
        limit = 3.0 * self._keepalive_limit() + self.config.reconnect_max + 10.0
        return f"session loop has not turned for {late:.1f}s" if late > limit else None

    def _keepalive_limit(self) -> float:
        """No PublishResponse for this long: the connection is lost (three keep-alives)."""
        periods = [g.keepalive or g.period * self.opc.keepalive_count for g in self.groups]
        return 3.0 * max(periods or [1.0]) + self.config.timeout

    async def _run(self) -> None:
        if self.opc.security_policy == "None":
            _log.warning("device %s: OPC UA security policy None (insecure: true): values and "
                         "credentials travel unsigned and in clear text", self.name)  # fmt: skip
        try:
            while True:
                self._turned = time.monotonic()
                try:
                    if self._client is None:
                        self._client = await ses.make_client(self.config)
                    await self._session(self._client)
                except asyncio.CancelledError:
                    raise
                except ses.Refused as exc:
                    self._failed(str(exc))
                    self._client = None  # certificates and files are read again next time
                except Exception as exc:
                    self._failed(_describe(exc))
                await asyncio.sleep(self.backoff())  # reset by set_online()
        finally:
            client, self._client = self._client, None
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ses.close_session(client), self.config.timeout)

    def _failed(self, reason: str) -> None:
        self.connect_failures += 1
        self.last_error = reason
        self.set_offline(reason)
        if self._client is not None:
            client = self._client
            with contextlib.suppress(Exception):
                client.disconnect_socket()

    async def _session(self, client: Any) -> None:
        reused = await ses.open_session(client)
        if self.responses or self.reads:
            self.reconnects += 1
        self.sessions_reused += reused
        if not reused:
            self.writer.forget()  # a new session may be a new server: read DataTypes again
        if self.opc.mode == "poll":
            self.set_online()
            await self._poll_loop(client)
            return
        if not reused:
            await self._transfer(client)
        while True:
            await self._create_missing(client)
            self.set_online()
            try:
                await self._publish_loop(client)
            except _Resubscribe:
                continue

    async def _transfer(self, client: Any) -> None:
        """A new session: take the subscriptions over from the old one where the server still
        has them; the others are lost (a gap)."""
        old = [g for g in self.groups if g.subscription_id]
        kept = await transfer(client, [g.subscription_id for g in old]) if old else []
        for g, ok in zip(old, kept, strict=True):
            if ok:
                self.transferred += 1
            else:
                self._lose(g, "the server no longer has the subscription (restarted, or away "
                           f"longer than lifetime {self.opc.lifetime:g}s)")  # fmt: skip

    async def _create_missing(self, client: Any) -> None:
        for g in self.groups:
            if not g.subscription_id:
                await create_subscription(client, self.config, g)
                self._trackers[g.name].reset()
                self.recreated += g.created
                g.created = True

    def _lose(self, group: Group, why: str) -> None:
        self._gap(group, why)
        group.subscription_id = 0

    # -- subscriptions: our publish loop ---------------------------------------------------------
    async def _publish_loop(self, client: Any) -> None:
        by_sub = {g.subscription_id: g for g in self.groups}
        acks: list[tuple[int, int]] = []
        inflight: dict[asyncio.Task[bytes], int] = {}
        counter = 0
        want = self.opc.publish_requests
        last = time.monotonic()
        limit = self._keepalive_limit()
        try:
            while True:
                while len(inflight) < want:
                    req = codec_publish_request(acks)
                    acks = []
                    counter += 1
                    inflight[asyncio.ensure_future(ses.request(client, req, 0))] = counter
                done, _ = await asyncio.wait(inflight, timeout=min(limit, 1.0),
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                self._turned = now = time.monotonic()
                if not done:
                    if now - last > limit:
                        raise ConnectionError(f"no PublishResponse for {now - last:.1f}s "
                                              "(keep-alives missed)")  # fmt: skip
                    continue
                last = now
                for task in sorted(done, key=inflight.__getitem__):
                    del inflight[task]
                    try:
                        data = task.result()
                    except Exception as exc:
                        name = type(exc).__name__
                        if name == "BadTimeout":
                            continue  # the request outlived its timeout: send another
                        if name == "BadTooManyPublishRequests":
                            want = max(1, want - 1)
                            continue
                        if name == "BadNoSubscription":
                            for g in self.groups:
                                self._lose(g, "the server has no subscription for this session")
                            raise _Resubscribe() from None
                        raise
                    await self._on_publish(client, data, by_sub, acks)
        finally:
            for task in inflight:
                task.cancel()
            for task in inflight:
                with contextlib.suppress(BaseException):
                    await task

    async def _on_publish(
        self, client: Any, data: bytes, by_sub: dict[int, Group], acks: list[tuple[int, int]]
    ) -> None:
        dec = self.decoder
        batch, texts, events = self._decode(data)
        self.responses += 1
        sid, seq = dec.subscription_id, dec.sequence_number
        has_data = len(batch) or dec.last_unknown or dec.last_events or dec.status_change >= 0
        status = dec.status_change
        avail = set(dec.available_sequence_numbers)
        group = by_sub.get(sid)
        if group is None:
            if has_data:
                acks.append((sid, seq))
            return
        tracker = self._trackers[group.name]
        missing = tracker.missing(seq)
        run: list[int] = []
        for m in missing:
            body = await republish(client, sid, m) if m in avail else None
            if body is None:
                run.append(m)
            else:
                self.republished += 1
                self._deliver(*self._decode(body))
            tracker.fresh(m)
        if run:
            self._gap(group, f"notifications {_span(run)} are no longer held by the server")
        if has_data:
            acks.append((sid, seq))
            if tracker.fresh(seq):
                self._deliver(batch, texts, events)
            else:
                self.duplicates += 1
        else:
            self.keepalives += 1
        if status >= 0 and status & 0x80000000:
            group.subscription_id = 0
            raise ConnectionError(
                f"subscription of group {group.name} ended: status 0x{status:08X}"
            )

    # -- polled reads ----------------------------------------------------------------------------
    async def _poll_loop(self, client: Any) -> None:
        tasks = [asyncio.create_task(self._poll_group(client, g)) for g in self.groups]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll_group(self, client: Any, group: Group) -> None:
        from asyncua import ua

        req = ua.ReadRequest()
        req.Parameters.TimestampsToReturn = ua.TimestampsToReturn.Both
        req.Parameters.NodesToRead = [
            ua.ReadValueId(NodeId=parse_node(p.node or ""), AttributeId=ua.AttributeIds.Value)
            for p, _ in group.points
        ]
        ids = np.array(group.ids, np.uint32)
        nxt = time.monotonic()
        while True:
            self._turned = time.monotonic()
            data = await ses.request(client, req)
            self.reads += 1
            self._deliver(*self._decode(data, ids))
            nxt += group.period
            delay = nxt - time.monotonic()
            if delay < 0:  # overran: skip the missed periods, keep the phase
                nxt += math.ceil(-delay / group.period) * group.period
                delay = nxt - time.monotonic()
            await asyncio.sleep(delay)

    # -- decoding and delivery -------------------------------------------------------------------
    @staticmethod
    def _columns(n: int) -> tuple[np.ndarray, ...]:
        return (np.empty(n, np.uint32), np.empty(n, np.float64), np.empty(n, np.float64),
                np.empty(n, np.float64), np.empty(n, np.uint8))  # fmt: skip

    def _decode(
        self, data: bytes, ids: np.ndarray | None = None
    ) -> tuple[SampleBatch, list[tuple[int, str, str]], list[DeviceEvent]]:
        """One response into a batch (copied out of the reused columns), its text values and
        its events."""
        need = codec.max_rows(len(data)) if ids is None else len(ids)
        if need > len(self._cols[0]):
            self._cols = self._columns(max(need, 2 * len(self._cols[0])))
        points, values, src, srv, quality = self._cols
        if ids is None:
            n = self.decoder.decode_publish(data, points, values, src, srv, quality)
        else:
            n = self.decoder.decode_read(data, ids, points, values, src, srv, quality)
        now = self._clock()
        ts = np.where(np.isnan(src[:n]), srv[:n], src[:n])
        ts = np.where(np.isnan(ts), now, ts)
        batch = SampleBatch(points[:n].copy(), ts, values[:n].copy(), quality[:n].copy())
        texts: list[tuple[int, str, str]] = []
        other = self.decoder.last_other
        if other:
            texts = self._others(data, batch, other)
        events = events_of(self.name, data, now) if self.decoder.last_events else []
        return batch, texts, events

    def _others(
        self, data: bytes, batch: SampleBatch, other: list[tuple[int, int, int, int]]
    ) -> list[tuple[int, str, str]]:
        """Strings become text events; arrays and structures are refused as BAD (a point holds
        one number)."""
        from asyncua.common.utils import Buffer
        from asyncua.ua.ua_binary import variant_from_binary

        texts = []
        keep = np.ones(len(batch), bool)
        for row, vtype, off, size in other:
            point = self._name_of.get(int(batch.point_ids[row]), "?")
            if batch.quality[row] == Quality.BAD:
                continue  # already NaN: nothing to read from a Bad value
            if vtype in _TEXT_TYPES and size < 1 << 16:
                try:
                    value = variant_from_binary(Buffer(data[off : off + size])).Value
                except Exception:  # the decoder checked the bounds; asyncua may still refuse it
                    value = None
                if value is not None and not isinstance(value, list):
                    text = str(getattr(value, "Text", value))
                    keep[row] = False
                    if self._texts.get(point) != text:  # polled reads repeat unchanged text
                        self._texts[point] = text
                        texts.append((row, point, text))
                    continue
            batch.values[row] = math.nan
            batch.quality[row] = Quality.BAD
            self.unsupported_values += 1
            if point not in self._unsupported:
                self._unsupported.add(point)
                _log.warning("device %s: %s has a value of OPC UA type %d (array or structure); "
                             "a point holds one number: map one node per element",
                             self.name, point, vtype)  # fmt: skip
        if not keep.all():  # text rows are events, not samples
            batch.point_ids, batch.ts = batch.point_ids[keep], batch.ts[keep]
            batch.values, batch.quality = batch.values[keep], batch.quality[keep]
        return texts

    def _deliver(
        self, batch: SampleBatch, texts: list[tuple[int, str, str]], events: list[DeviceEvent]
    ) -> None:
        if not self.online:
            self.set_online()
        if len(batch):
            self.rows += len(batch)
            self._on_batch(batch)
        now = self._clock()
        for _row, point, text in texts:
            self.text_values += 1
            self._on_event(DeviceEvent(self.name, "text", now, f"{point}={text}"))
        for event in events:
            self.events += 1
            self._on_event(event)

    def _gap(self, group: Group, why: str) -> None:
        """An explicit gap: what the group's points did meanwhile is lost."""
        self.gaps += 1
        ids = np.array(group.ids, np.uint32)
        now = self._clock()
        _log.warning("device %s group %s: data gap: %s", self.name, group.name, why)
        self._on_batch(SampleBatch.uniform(ids, now, np.full(len(ids), np.nan), Quality.BAD))

    # -- writes ----------------------------------------------------------------------------------
    async def write_value(self, point: str, value: float) -> None:
        """Write ``value`` with the node's DataType (the base refused unknown, read-only and
        non-finite targets). Raises WriteError: ``refused`` for a node that is not writable
        (AccessLevel) or a value its DataType cannot hold."""
        await self.writer.write(self._client if self.online else None, point, value)

    # -- stats -----------------------------------------------------------------------------------
    def counters(self) -> Stats:
        return {
            "publish_responses": self.responses,
            "keepalives": self.keepalives,
            "reads": self.reads,
            "values": self.rows,
            "text_values": self.text_values,
            "events": self.events,
            "unsupported_values": self.unsupported_values,
            "republished": self.republished,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "reconnects": self.reconnects,
            "sessions_reused": self.sessions_reused,
            "subscriptions_transferred": self.transferred,
            "subscriptions_recreated": self.recreated,
            "connect_failures": self.connect_failures,
            "bad_nodes": sum(len(g.bad_nodes) for g in self.groups),
        }


class _Resubscribe(Exception):
    """A subscription ended while the session lives: create it again on the same session."""


def codec_publish_request(acks: list[tuple[int, int]]) -> Any:
    from asyncua import ua

    req = ua.PublishRequest()
    req.Parameters.SubscriptionAcknowledgements = acks_for(acks)
    return req


def _span(seqs: list[int]) -> str:
    return str(seqs[0]) if len(seqs) == 1 else f"{seqs[0]}..{seqs[-1]}"


def _describe(exc: BaseException) -> str:
    """A connection failure as one line an operator can act on."""
    name = type(exc).__name__
    text = str(exc) or name
    if name in ("BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"):
        return f"the server refused the credentials ({name}): check username and password_file"
    if name in ("BadCertificateUntrusted", "BadCertificateInvalid", "BadSecurityChecksFailed"):
        return (f"the server refused the gateway's certificate ({name}): trust the gateway's "
                "cert.der on the server")  # fmt: skip
    if isinstance(exc, TimeoutError):
        return "no answer from the server (timeout)"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot connect: {exc.strerror or text}"
    if isinstance(exc, ConnectionError) and str(exc):
        return f"connection lost: {exc}"
    if isinstance(exc, OSError):
        return f"cannot connect: {text}"
    return f"{name}: {text}" if text != name else name
