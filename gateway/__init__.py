"""Edge gateway runtime: devices -> native parsing -> rules -> durable ZeroMQ uplink."""

__version__ = "0.1.0"
