"""The cloud's half of store-and-forward: ROUTER receivers, stores, PUB fan-out, subscribers.

It imports from the gateway's half only the wire contract (:mod:`gateway.uplink.wire`), the
CurveZMQ key files both sides use (:mod:`gateway.uplink.keys`) and the JSON view of records
(:mod:`gateway.uplink.recordjson`).
"""

from gateway.cloud.main import run_cloud
from gateway.cloud.receiver import CloudReceiver
from gateway.cloud.store import CloudStore, SQLiteCloudStore
from gateway.cloud.subscriber import Record, Subscriber, run_subscribe

__all__ = [
    "CloudReceiver",
    "CloudStore",
    "Record",
    "SQLiteCloudStore",
    "Subscriber",
    "run_cloud",
    "run_subscribe",
]
