"""CurveZMQ + ZAP allow-list over real sockets: who gets in, under which name, and what is counted."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
from uplink_support import Pki, RawPeer, bounded, make_pki, run, secure_receiver, wait_until

from gateway.cli import main as cli_main
from gateway.cloud.receiver import CloudReceiver
from gateway.cloud.store import SQLiteCloudStore
from gateway.config import UplinkConfig
from gateway.uplink import keys, wire
from gateway.uplink.client import Uplink, UplinkError


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def _uplink_config(pki: Pki, endpoint: str, name: str, **kw: object) -> UplinkConfig:
    base = UplinkConfig(
        endpoints=(endpoint,),
        queue=str(pki.root / f"{name}.queue.db"),
        batch_max_delay=0.005,
        ack_timeout=1.0,
        server_key=str(pki.root / "cloud" / "cloud.key"),
        key_dir=str(pki.gw_dir),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_keys_cli_new_show_allow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d, allow = tmp_path / "k", tmp_path / "allow"
    assert cli_main(["keys", "new", "--dir", str(d), "--name", "gw1"]) == 0
    assert (d / "gw1.key_secret").stat().st_mode & 0o777 == 0o600
    public = keys.load(d / "gw1.key").public.decode()
    assert public in capsys.readouterr().out
    assert cli_main(["keys", "new", "--dir", str(d), "--name", "gw1"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["keys", "show", str(d / "gw1.key")]) == 0
    assert public in capsys.readouterr().out
    assert cli_main(["keys", "allow", str(d / "gw1.key"), "--allow-dir", str(allow)]) == 0
    assert keys.AllowList(allow).lookup(public.encode()) == "gw1"
    assert (
        cli_main(["keys", "allow", str(d / "gw1.key"), "--allow-dir", str(allow), "--id", "x/y"])
        == 1
    )
    (tmp_path / "junk.key").write_text("not a key")
    assert cli_main(["keys", "show", str(tmp_path / "junk.key")]) == 1


def test_secure_uplink_delivers_under_the_key_name(pki: Pki) -> None:
    pki.gateway("gw1")

    async def scenario() -> None:
        async with secure_receiver(pki) as rx:
            assert rx.endpoint
            up = Uplink(_uplink_config(pki, rx.endpoint, "gw1"), "gw1")
            await up.start()
            try:
                for i in range(50):
                    up.submit("s", b"%d" % i)
                await wait_until(
                    lambda: rx.status().get("gw1", {}).get("records") == 50, "50 stored"
                )
                assert up.stats()["secure"] is True
            finally:
                await bounded(up.stop(), "uplink stop")
            assert rx.counters()["auth_accepted"] >= 1 and rx.counters()["auth_rejected"] == 0

    run(scenario())


def test_unknown_key_is_refused_until_allowed_without_restart(pki: Pki) -> None:
    pki.gateway("late", allowed=False)

    async def scenario() -> None:
        async with secure_receiver(pki) as rx:
            assert rx.endpoint
            up = Uplink(_uplink_config(pki, rx.endpoint, "late", ack_timeout=0.5), "late")
            await up.start()
            try:
                up.submit("s", b"x")
                await wait_until(lambda: rx.counters()["auth_rejected"] >= 1, "a ZAP rejection")
                assert "late" not in rx.status()
                keys.allow(pki.gw_dir / "late.key", pki.allow_dir)  # no receiver restart
                await wait_until(
                    lambda: rx.status().get("late", {}).get("records") == 1, "the record", 10.0
                )
            finally:
                await bounded(up.stop(), "uplink stop")

    run(scenario(), timeout=30)


def test_wrong_server_key_and_plaintext_fail_the_handshake_and_are_counted(pki: Pki) -> None:
    gw = pki.gateway("gw1")
    impostor = keys.create(pki.root / "other", "cloud")

    async def scenario() -> None:
        async with secure_receiver(pki) as rx:
            assert rx.endpoint
            wrong = RawPeer(rx.endpoint, pki.curve(gw, server=impostor.public))
            plain = RawPeer(rx.endpoint)
            try:
                await wrong.sock.send_multipart(wire.encode(wire.Hello("gw1", {})))
                await plain.sock.send_multipart(wire.encode(wire.Hello("gw1", {})))
                await wait_until(
                    lambda: rx.counters()["handshake_failed"] >= 2, "two failed handshakes"
                )
                assert rx.status() == {}
                good = RawPeer(rx.endpoint, pki.curve(gw))  # the receiver still serves
                try:
                    assert isinstance(await good.call(wire.Hello("gw1", {})), wire.Welcome)
                finally:
                    good.close()
            finally:
                wrong.close()
                plain.close()

    run(scenario())


def test_gateway_claiming_another_id_is_rejected_and_logged(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    b = pki.gateway("gw-b")
    pki.gateway("gw-a")

    async def scenario() -> None:
        async with secure_receiver(pki) as rx:
            assert rx.endpoint
            peer = RawPeer(rx.endpoint, pki.curve(b))
            try:
                with caplog.at_level(logging.WARNING):
                    reply = await peer.call(wire.Hello("gw-a", {"s": 1}))
                assert isinstance(reply, wire.Error) and reply.code == "identity"
                assert "claimed to be 'gw-a'" in caplog.text
                # Its DATA is not taken either, under any name.
                reply = await peer.call(wire.Data.build("s", 1, 1, [b"forged"]))
                assert isinstance(reply, wire.Error) and reply.code == "hello_required"
                assert rx.counters()["identity_rejected"] == 1
                assert await peer.call(wire.Hello("gw-b", {"s": 1})) == wire.Welcome(
                    {"s": (1, 0)}, rx.credit
                )
            finally:
                peer.close()
        with SQLiteCloudStore(pki.root / "cloud.db") as s:
            assert s.records("gw-a", "s") == [] and s.records("gw-b", "s") == []

    run(scenario())


def test_removed_key_is_refused_on_its_open_connection(pki: Pki) -> None:
    gw = pki.gateway("gw1")

    async def scenario() -> None:
        async with secure_receiver(pki) as rx:
            assert rx.endpoint and rx.allow
            peer = RawPeer(rx.endpoint, pki.curve(gw))
            try:
                assert isinstance(await peer.call(wire.Hello("gw1", {"s": 1})), wire.Welcome)
                os.unlink(pki.allow_dir / "gw1.key")
                rx.allow.reload()
                reply = await peer.call(wire.Data.build("s", 1, 1, [b"x"]))
                assert isinstance(reply, wire.Error) and reply.code == "unauthorised"
                assert rx.counters()["unauthorised"] == 1
            finally:
                peer.close()

    run(scenario())


def test_oversized_and_malformed_frames_are_counted_not_fatal(pki: Pki) -> None:
    gw = pki.gateway("gw1")

    async def scenario() -> None:
        async with secure_receiver(pki, max_message=64 * 1024) as rx:
            assert rx.endpoint
            big = RawPeer(rx.endpoint, pki.curve(gw))
            try:
                await big.sock.send_multipart([b"DATA", b"\0" * (200 * 1024)])
                await asyncio.sleep(0)  # nothing comes back: libzmq drops the peer
                peer = RawPeer(rx.endpoint, pki.curve(gw))
                try:
                    for frames in ([b"DATA", b"\xc1"], [b"X"], [b"A", b"B", b"C"]):
                        reply = await peer.call(frames)
                        assert isinstance(reply, wire.Error) and reply.code == "bad"
                    assert isinstance(await peer.call(wire.Hello("gw1", {})), wire.Welcome)
                finally:
                    peer.close()
                assert rx.counters()["bad_messages"] == 3
                await wait_until(
                    lambda: rx.counters()["disconnects"] >= 1, "the oversized peer dropped"
                )
            finally:
                big.close()

    run(scenario())


def test_uplink_refuses_missing_key_files(pki: Pki) -> None:
    config = _uplink_config(pki, "tcp://127.0.0.1:1", "nobody")
    with pytest.raises(UplinkError, match="nobody.key_secret"):
        Uplink(config, "nobody")


def test_receiver_needs_both_halves_of_curve(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both"):
        CloudReceiver(
            "tcp://127.0.0.1:0", None, SQLiteCloudStore(pki.root / "x.db"), server_key=pki.cloud
        )
