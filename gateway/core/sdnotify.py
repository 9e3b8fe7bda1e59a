"""systemd's notify protocol (``sd_notify(3)``) spoken directly over ``$NOTIFY_SOCKET``.

The unit is ``Type=notify`` with ``WatchdogSec=``: systemd counts the gateway as started only when it
sends ``READY=1`` (after its devices, uplink and status server are up) and restarts it when
``WATCHDOG=1`` pings stop. The pings come from the runtime's own tick on the event loop, so a loop
that is blocked or stuck stops them, which is the point: a thread pinging on a timer would keep a
wedged gateway alive for ever.

No dependency on libsystemd or a Python binding: the protocol is one datagram of ``KEY=VALUE`` lines
to a unix socket. Without ``NOTIFY_SOCKET`` (a terminal, a container, a test) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

_log = logging.getLogger(__name__)


def parse_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as a ``sendto`` address: ``@name`` is Linux's abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class SystemdNotifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to the service manager, if there is one.

    Parameters
    ----------
    environ:
        Where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are read (default: the
        process environment).
    clock:
        Monotonic seconds; injected by tests.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        self.clock = clock
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = parse_address(raw) if raw else None
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # sd_watchdog_enabled(3): ping at half the timeout so one late tick is not fatal.
            self.watchdog_interval = int(usec) / 2e6
        self._next_ping = 0.0
        self._sock: socket.socket | None = None
        self._failed = False
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one message of ``KEY=VALUE`` fields; False (logged once) if it could not be sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:  # systemd restarting is no reason to flood the journal
                _log.warning("sd_notify to %r failed: %s", self.address, exc)
            self._failed = True
            return False
        self._failed = False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", f"MAINPID={os.getpid()}", *([f"STATUS={status}"] if status else []))
        self._next_ping = self.clock()
        self.tick()

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self, status: str = "stopping") -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def tick(self) -> None:
        """Called from the event loop's periodic tick: pings the watchdog when a ping is due."""
        if self.watchdog_interval is None or self.address is None:
            return
        now = self.clock()
        if now >= self._next_ping:
            self.notify("WATCHDOG=1")
            self._next_ping = now + self.watchdog_interval

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
