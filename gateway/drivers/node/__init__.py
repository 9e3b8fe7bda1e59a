"""Southbound node driver: MicroPython sensor nodes speaking the node frame protocol.

See README.md in this folder, ``sample.yaml`` for every option, docs/node-frame.md for the
wire format and micropython/gwnode.py for the node side.
"""

from gateway.drivers.node.device import NodeDevice
from gateway.drivers.node.link import NodeLink, UartNodeLink, UdpNodeLink, node_link

__all__ = ["NodeDevice", "NodeLink", "UartNodeLink", "UdpNodeLink", "node_link"]
