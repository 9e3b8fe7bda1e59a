"""Uplink: durable store-and-forward of opaque records over ZeroMQ (gateway and cloud sides).

The uplink knows bytes, streams and sequence numbers, nothing of devices or points.
"""

from gateway.uplink.client import Uplink, UplinkError
from gateway.uplink.cloud import run_cloud
from gateway.uplink.queue import DurableQueue
from gateway.uplink.receiver import CloudReceiver
from gateway.uplink.store import CloudStore, SQLiteCloudStore
from gateway.uplink.subscriber import Record, Subscriber, run_subscribe

__all__ = [
    "CloudReceiver",
    "CloudStore",
    "DurableQueue",
    "Record",
    "SQLiteCloudStore",
    "Subscriber",
    "Uplink",
    "UplinkError",
    "run_cloud",
    "run_subscribe",
]
