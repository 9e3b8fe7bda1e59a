"""The receiver as a service: ``/metrics``, ``/health`` and ``/status`` (``--status-listen``).

Served by the gateway's own tiny HTTP server (:class:`gateway.core.httpd.StatusServer`, GET only,
meant for loopback or a scrape network). Everything is computed at request time from the
receiver's counters, so an unscraped receiver pays nothing.

``/status`` is one receiver's view: the gateways it has seen since it started, each with
``receiver`` (this one's name), so a fleet's views can be merged (``gateway fleet`` merges every
receiver's on the control directory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.cloud.promtext import Exposition, process_metrics

if TYPE_CHECKING:
    from gateway.cloud.control import ControlServer
    from gateway.cloud.receiver import CloudReceiver

#: counters() keys that are rejections (label ``reason`` of gateway_cloud_rejected_total).
REJECTIONS = (
    "bad_messages", "auth_rejected", "handshake_failed", "identity_rejected", "unauthorised",
    "hello_required", "limit_refused",
)  # fmt: skip


class ReceiverService:
    """Answers the three routes for one receiver (and its control socket, if any)."""

    def __init__(
        self, receiver: CloudReceiver, name: str, control: ControlServer | None = None
    ) -> None:
        self.receiver = receiver
        self.name = name
        self.control = control

    # --- /status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        rx = self.receiver
        now = rx._clock()
        gateways: dict[str, Any] = {}
        for gw, st in rx.status().items():
            state = rx._gateways.get(gw)
            last_commit = state.last_commit if state is not None and state.last_commit else None
            backlog = state.backlog() if state is not None else None
            gateways[gw] = {
                "receiver": self.name,
                "connected": st["connected"],
                "last_seen": st["last_seen"],
                "seen_ago_s": round(now - float(st["last_seen"]), 3),  # type: ignore[arg-type]
                "last_commit": last_commit,
                # Seconds the cloud's copy is behind what the gateway announced: since its last
                # commit while it still owes announced records, else 0.
                "lag_s": round(now - last_commit, 3) if backlog and last_commit else 0.0,
                "backlog": backlog,
                "backlog_announced": state.announced if state is not None else None,
                "records": st["records"],
                "records_per_s": st["records_per_s"],
                "duplicates": st["duplicates"],
                "nacks": st["nacks"],
                "dropped": st["dropped"],
                "sessions": st["sessions"],
                "duplicate_identity": st["duplicate_identity"],
                "streams": st["streams"],
            }
        healthy, why = self.health()
        return {
            "receiver": self.name,
            "endpoint": rx.endpoint,
            "pub_endpoint": rx.pub_endpoint,
            "secure": rx.secure,
            "healthy": healthy,
            "problems": why["problems"],
            "time": now,
            "gateways": gateways,
        }

    # --- /health -------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """200 while bound and the store takes commits; 503 with the reasons otherwise."""
        rx = self.receiver
        problems = []
        if not rx.ready.is_set():
            problems.append("not bound (starting or stopping)")
        if rx._store_failed is not None:
            problems.append(f"store unavailable: {rx._store_failed[0]}; acknowledging nothing")
        return not problems, {"receiver": self.name, "ok": not problems, "problems": problems}

    # --- /metrics ------------------------------------------------------------------------------

    def metrics(self) -> str:
        rx = self.receiver
        out = Exposition()
        counters = rx.counters()
        sizes = rx.sizes()
        status = rx.status()
        p = "gateway_cloud_"
        c = counters
        for name, kind, text, value in (
            ("records_total", "counter", "Records committed to the store (duplicates not counted).",
             rx.records_stored),
            ("group_commits_total", "counter", "Store transactions of DATA (group commits).",
             c["group_commits"]),
            ("group_messages_total", "counter", "DATA messages stored by group commits.",
             c["group_messages"]),
            ("auth_accepted_total", "counter", "CurveZMQ handshakes accepted by the allow-list.",
             c["auth_accepted"]),
            ("disconnects_total", "counter", "Gateway connections that ended.", c["disconnects"]),
            ("duplicate_identity_total", "counter",
             "Episodes of two processes using one gateway identity.", c["duplicate_identity"]),
            ("store_replaced_total", "counter",
             "Times the store file was deleted or replaced under the receiver.",
             c["store_replaced"]),
            ("store_lost_seqs_total", "counter",
             "Acknowledged seqs lost with a replaced store (recorded as gaps).",
             c["store_lost_seqs"]),
            ("gateways_connected", "gauge", "Gateways with a live session here.",
             sum(1 for st in status.values() if st["connected"])),
            ("gateways_known", "gauge", "Gateways this receiver has state of (connected or not).",
             sizes["gateways"]),
            ("commands_pending", "gauge", "Downlink commands waiting for a RESULT.",
             sizes["commands"]),
        ):  # fmt: skip
            out.one(p + name, kind, text, value)
        out.histogram(
            p + "commit_seconds",
            "Duration of one group commit's transaction, fsync included.",
            rx.commit_seconds,
        )
        out.family(
            p + "rejected_total",
            "counter",
            "Messages, connections and handshakes refused, by reason.",
            [((("reason", k),), c[k]) for k in REJECTIONS],
        )
        if self.control is not None:
            out.family(
                p + "commands_total",
                "counter",
                "Operator commands through the control socket, by outcome or error.",
                [((("outcome", k),), v) for k, v in sorted(self.control.commands.items())],
            )
        out.one(p + "healthy", "gauge", "1 while /health answers 200.", float(self.health()[0]))
        process_metrics(out, __version__)
        return out.text()
