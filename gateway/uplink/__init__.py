"""Uplink, the gateway's half of store-and-forward: durable queue, writer, DEALER client.

The uplink knows bytes, streams and sequence numbers, nothing of devices or points. The cloud's
half is :mod:`gateway.cloud`; :mod:`gateway.uplink.wire` is the one contract both import.
"""

from gateway.uplink.client import Uplink, UplinkError
from gateway.uplink.queue import DurableQueue

__all__ = ["DurableQueue", "Uplink", "UplinkError"]
