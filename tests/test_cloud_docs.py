"""docs/cloud.md states what the receiver does: its metrics table lists exactly the families a
running receiver (with a control socket) exports, and its exit-code table the CLI's codes."""

from __future__ import annotations

import re
from pathlib import Path

from cloud_cli_support import short_dir
from prometheus_client.parser import text_string_to_metric_families
from uplink_support import RawPeer, run, running_receiver

from gateway.cloud import command
from gateway.cloud.control import ControlServer
from gateway.cloud.service import ReceiverService
from gateway.cloud.store import SQLiteCloudStore
from gateway.uplink import wire

DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud.md"


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(title)
    end = text.find("\n#", start + len(title))
    return text[start : end if end > 0 else None]


def _exported(tmp_path: Path) -> dict[str, str]:
    async def main() -> str:
        with short_dir() as d:
            async with running_receiver(SQLiteCloudStore(tmp_path / "c.db")) as rx:
                assert rx.endpoint is not None
                control = ControlServer(rx, str(d / "ctl"), "rx1", lambda: {})
                await control.start()
                control.commands["ok"] = 1  # as after one command
                peer = RawPeer(rx.endpoint)
                await peer.call(wire.Hello("gw1", {"s": 1}))
                await peer.call(wire.Data.build("s", 1, 1, [b"x"]))
                peer.close()
                try:
                    return ReceiverService(rx, "rx1", control).metrics()
                finally:
                    await control.stop()

    text = run(main())
    out = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = {k for s in fam.samples for k in s.labels if k != "le"}
        out[name] = ",".join(sorted(labels))
    return out


def test_metrics_table_is_what_a_receiver_exports(tmp_path: Path) -> None:
    exported = _exported(tmp_path)
    documented: dict[str, str] = {}
    for line in _section("### Receiver metrics").splitlines():
        if not line.startswith("| `"):
            continue
        for name, labels in re.findall(r"`([a-z_]+)(?:\{([a-z_,]*)\})?`", line.split("|")[1]):
            documented[name] = ",".join(sorted(labels.split(","))) if labels else ""
    assert documented == exported


def test_exit_code_table_matches_the_cli() -> None:
    rows = re.findall(r"^\| (\d) \| (.+?) \|$", _section("## Commands to gateways"), re.M)
    assert [int(code) for code, _ in rows] == [
        command.OK, command.REFUSED, command.BAD_ARGS, command.UNKNOWN, command.OFFLINE,
        command.NO_RECEIVER,
    ]  # fmt: skip
    for code, text in rows:
        first_word = text.split()[0].rstrip(":").lower()
        assert first_word in command.EXIT_CODES.lower(), (code, text)
