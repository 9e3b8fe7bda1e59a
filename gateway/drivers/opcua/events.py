"""OPC UA events and Alarms & Conditions of configured nodes, onto the events stream.

Each node of ``opcua.events`` gets an event monitored item in the first poll group's
subscription (client handles from :data:`EVENT_HANDLE_BASE` up, beside the points' handles,
which the compiled decoder maps; it skips event lists and counts them). A PublishResponse that
carries events is the rare case: asyncua decodes it, and every event becomes one ``opcua_event``
device event whose detail names the source, severity, type and message (and, for a condition,
its name and whether it is active).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asyncua import ua

from gateway.core.model import DeviceEvent
from gateway.drivers.opcua.subscriptions import parse_node

#: Client handles of event items start here (point ids are far below).
EVENT_HANDLE_BASE = 0x80000000
_BASE_EVENT, _CONDITION, _ALARM = 2041, 2782, 2915
#: (type defining the field, browse path, name in the detail)
FIELDS: tuple[tuple[int, tuple[str, ...], str], ...] = (
    (_BASE_EVENT, ("EventType",), "type"),
    (_BASE_EVENT, ("SourceName",), "source"),
    (_BASE_EVENT, ("Time",), "time"),
    (_BASE_EVENT, ("Severity",), "severity"),
    (_BASE_EVENT, ("Message",), "message"),
    (_CONDITION, ("ConditionName",), "condition"),
    (_ALARM, ("ActiveState", "Id"), "active"),
)


def event_filter() -> ua.EventFilter:
    clauses = []
    for type_id, path, _ in FIELDS:
        op = ua.SimpleAttributeOperand()
        op.TypeDefinitionId = ua.NodeId(ua.Int32(type_id))
        op.BrowsePath = [ua.QualifiedName(p, 0) for p in path]
        op.AttributeId = ua.AttributeIds.Value
        clauses.append(op)
    return ua.EventFilter(SelectClauses=clauses)


def event_items(nodes: tuple[str, ...]) -> list[ua.MonitoredItemCreateRequest]:
    items = []
    for i, node in enumerate(nodes):
        mp = ua.MonitoringParameters(ClientHandle=EVENT_HANDLE_BASE + i, SamplingInterval=0,
                                     QueueSize=1000, DiscardOldest=True, Filter=event_filter())  # fmt: skip
        items.append(ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=parse_node(node),
                                         AttributeId=ua.AttributeIds.EventNotifier),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=mp,
        ))  # fmt: skip
    return items


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, datetime):
        return f"{value.timestamp():.3f}"
    return str(value)


def events_of(device: str, body: bytes, now: float) -> list[DeviceEvent]:
    """The events in a PublishResponse body (asyncua decodes it: events are rare)."""
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary

    resp = struct_from_binary(ua.PublishResponse, Buffer(body))
    out = []
    for data in resp.Parameters.NotificationMessage.NotificationData:
        if not isinstance(data, ua.EventNotificationList):
            continue
        for ev in data.Events:
            fields = {
                name: f.Value for (_, _, name), f in zip(FIELDS, ev.EventFields, strict=False)
            }
            when = fields.get("time")
            ts = when.timestamp() if isinstance(when, datetime) else now
            parts = [f"source={_text(fields.get('source'))}",
                     f"severity={_text(fields.get('severity'))}",
                     f"type={_text(fields.get('type'))}"]  # fmt: skip
            if fields.get("condition") is not None:
                parts.append(f"condition={_text(fields['condition'])}")
                parts.append(f"active={str(bool(fields.get('active'))).lower()}")
            parts.append(f"message={_text(fields.get('message'))}")
            out.append(DeviceEvent(device, "opcua_event", ts, " ".join(parts)))
    return out
