"""Subscriptions of an OPC UA device: one per poll group, monitored items in bulk, and the
bookkeeping of notification sequence numbers that makes a short disconnect lossless.

Each data NotificationMessage carries the next sequence number of its subscription. The
:class:`SequenceTracker` of a subscription knows the last one delivered; a message (or a
keep-alive, which carries the next number without consuming it) further ahead means messages
were missed: those the server still holds (its ``AvailableSequenceNumbers``) are asked for with
Republish, the rest are a declared gap. A message at or behind the last one (republished twice,
or sent again after a re-activated session) is dropped, so every notification is delivered once.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from asyncua import Client, ua

from gateway.config import DeviceConfig, PointConfig
from gateway.drivers.opcua.session import call, request

_log = logging.getLogger(__name__)

#: Monitored items created per CreateMonitoredItems request.
ITEMS_PER_REQUEST = 1000
_DEADBAND = {"none": 0, "absolute": 1, "percent": 2}
_U32, _I32 = struct.Struct("<I"), struct.Struct("<i")
_PUBLISH_RESPONSE_ID = b"\x01\x00" + struct.pack("<H", 829)  # four-byte NodeId i=829


@dataclass
class Group:
    """A poll group's subscription: its points, ids and the server-side state."""

    name: str
    period: float
    points: list[tuple[PointConfig, int]]  # (point, point id)
    subscription_id: int = 0
    keepalive: float = 0.0  # s between keep-alives, as revised by the server
    created: bool = False  # a subscription was created once (a new one is a re-creation)
    events: bool = False  # the device's event items live in this group's subscription
    bad_nodes: dict[str, str] = field(default_factory=dict)  # point -> why its item failed

    @property
    def ids(self) -> list[int]:
        return [pid for _, pid in self.points]


def groups_of(config: DeviceConfig, point_ids: dict[str, int]) -> list[Group]:
    """The device's poll groups that have points, in config order."""
    out: dict[str, Group] = {}
    for p in config.points:
        g = out.get(p.poll)
        if g is None:
            g = out[p.poll] = Group(p.poll, config.poll_groups[p.poll], [])
        g.points.append((p, point_ids[f"{config.name}.{p.name}"]))
    groups = list(out.values())
    if config.opcua is not None and config.opcua.events:
        if not groups:  # events only: a subscription of their own at the first group's period
            name, period = next(iter(config.poll_groups.items()))
            groups.append(Group(name, period, []))
        groups[0].events = True
    return groups


def parse_node(text: str) -> ua.NodeId:
    """A NodeId from its string form; ValueError with the text when it is not one."""
    try:
        return ua.NodeId.from_string(text)
    except Exception as exc:  # asyncua raises UaStringParsingError, ValueError, ...
        raise ValueError(f"node {text!r} is not a NodeId ({exc})") from None


async def create_subscription(client: Client, config: DeviceConfig, group: Group) -> None:
    """CreateSubscription for ``group`` and its monitored items (client handle = point id)."""
    opc = config.opcua
    assert opc is not None
    settings = opc.group(group.name)
    interval_ms = group.period * 1000.0
    req = ua.CreateSubscriptionRequest()
    params = req.Parameters
    params.RequestedPublishingInterval = interval_ms
    params.RequestedMaxKeepAliveCount = opc.keepalive_count
    # The server keeps the subscription this many intervals without a PublishRequest: the
    # outage it survives. At least three keep-alives, as the spec requires.
    params.RequestedLifetimeCount = max(
        3 * opc.keepalive_count, math.ceil(opc.lifetime / group.period)
    )
    params.MaxNotificationsPerPublish = 0
    params.PublishingEnabled = True
    resp = await call(client, req, ua.CreateSubscriptionResponse)
    group.subscription_id = int(resp.Parameters.SubscriptionId)
    revised = resp.Parameters
    group.keepalive = revised.RevisedPublishingInterval / 1000.0 * revised.RevisedMaxKeepAliveCount
    sampling = settings.sampling_interval
    sampling_ms = interval_ms if sampling is None else sampling * 1000.0
    filt = None
    if settings.deadband != "none":
        filt = ua.DataChangeFilter(
            Trigger=ua.DataChangeTrigger.StatusValue,
            DeadbandType=_DEADBAND[settings.deadband or "none"],
            DeadbandValue=float(settings.deadband_value or 0.0),
        )
    items = []
    for point, pid in group.points:
        mp = ua.MonitoringParameters(
            ClientHandle=pid,
            SamplingInterval=sampling_ms,
            QueueSize=int(settings.queue_size or 1),
            DiscardOldest=True,
        )
        if filt is not None:
            mp.Filter = filt
        items.append(ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=parse_node(point.node or ""),
                                         AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=mp,
        ))  # fmt: skip
    group.bad_nodes.clear()
    if group.events:
        from gateway.drivers.opcua.events import event_items

        items.extend(event_items(opc.events))
    for start in range(0, len(items), ITEMS_PER_REQUEST):
        chunk = items[start : start + ITEMS_PER_REQUEST]
        mreq = ua.CreateMonitoredItemsRequest()
        mreq.Parameters.SubscriptionId = group.subscription_id
        mreq.Parameters.TimestampsToReturn = ua.TimestampsToReturn.Both
        mreq.Parameters.ItemsToCreate = chunk
        mresp = await call(client, mreq, ua.CreateMonitoredItemsResponse)
        names = [p.name for p, _ in group.points] + [f"events:{e}" for e in opc.events]
        for name, result in zip(names[start:], mresp.Results, strict=False):
            if not result.StatusCode.is_good():
                group.bad_nodes[name] = result.StatusCode.name
    if group.bad_nodes:
        shown = ", ".join(f"{p} ({why})" for p, why in list(group.bad_nodes.items())[:5])
        more = len(group.bad_nodes) - 5
        _log.warning("device %s group %s: %d node(s) cannot be monitored: %s%s", config.name,
                     group.name, len(group.bad_nodes), shown, f" and {more} more" if more > 0 else "")  # fmt: skip


async def transfer(client: Client, ids: Sequence[int]) -> list[bool]:
    """TransferSubscriptions to the (new) session; True for each one the server kept."""
    req = ua.TransferSubscriptionsRequest()
    req.Parameters.SubscriptionIds = list(ids)
    req.Parameters.SendInitialValues = False
    try:
        resp = await call(client, req, ua.TransferSubscriptionsResponse)
    except ua.UaStatusCodeError:  # BadServiceUnsupported and kin: nothing transferred
        return [False] * len(ids)
    return [r.StatusCode.is_good() for r in resp.Parameters.Results]


async def republish(client: Client, subscription_id: int, seq: int) -> bytes | None:
    """Ask for one missed NotificationMessage again, as a PublishResponse body for the decoder
    (None when the server no longer has it).

    The RepublishResponse is rewritten into a PublishResponse byte for byte (its
    NotificationMessage is not decoded and encoded again: a message held during an outage
    carries thousands of values, which asyncua's codec would take a second over).
    """
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary

    req = ua.RepublishRequest()
    req.Parameters.SubscriptionId = subscription_id
    req.Parameters.RetransmitSequenceNumber = seq
    try:
        data = await request(client, req)
    except ua.UaStatusCodeError:  # BadMessageNotAvailable
        return None
    buf = Buffer(data)
    nodeid_from_binary(buf)
    struct_from_binary(ua.ResponseHeader, buf)
    off = len(data) - len(buf)  # where the NotificationMessage starts
    if data[:2] != b"\x01\x00" or len(data) < off + 16:
        raise ValueError(f"RepublishResponse of {len(data)} bytes is not understood")
    (got,) = _U32.unpack_from(data, off)
    (count,) = _I32.unpack_from(data, off + 12)
    if got != seq or count <= 0:
        return None  # asyncua's server answers an empty message instead of a fault
    return b"".join((
        _PUBLISH_RESPONSE_ID, data[4:off], _U32.pack(subscription_id), _I32.pack(0), b"\x00",
        data[off:], _I32.pack(0), _I32.pack(0),
    ))  # fmt: skip


class SequenceTracker:
    """Sequence numbers of one subscription: what was delivered, what is missing."""

    def __init__(self) -> None:
        self.last: int | None = None  # last data message delivered

    def reset(self) -> None:
        self.last = None

    def missing(self, upto: int) -> list[int]:
        """Numbers after the last delivered one and before ``upto`` (wrap-around ignored: 2^32
        messages)."""
        if self.last is None or upto <= self.last + 1:
            return []
        return list(range(self.last + 1, min(upto, self.last + 1 + 100_000)))

    def fresh(self, seq: int) -> bool:
        """True if ``seq`` was not delivered yet (and records it)."""
        if self.last is not None and seq <= self.last:
            return False
        self.last = seq
        return True


def acks_for(pending: Iterable[tuple[int, int]]) -> list[ua.SubscriptionAcknowledgement]:
    return [ua.SubscriptionAcknowledgement(SubscriptionId=s, SequenceNumber=n) for s, n in pending]
