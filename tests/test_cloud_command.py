"""`gateway command` on the cloud host, with real processes: `gateway cloud` receivers, a demo
gateway (`gateway run`, devices offline) and the CLI, through the receivers' control sockets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cloud_cli_support import (
    ROOT,
    cloud,
    command,
    commands,
    gateway,
    gateway_config,
    short_dir,
    wait_online,
)
from gateway_support import MODEL, REFERENCE

from gateway.cloud import control

pytest.importorskip("ai_edge_litert")  # the demo config's model


def test_commands_reach_the_gateway_and_exit_codes_say_the_outcome(tmp_path: Path) -> None:
    with short_dir() as d, cloud(d, "rx1") as rx:
        with gateway(gateway_config(tmp_path, [rx.endpoint])):
            assert wait_online(d).strip() == "demo-gw ping: ok: pong demo-gw"
            blob = tmp_path / "bad.tflite"
            blob.write_bytes(b"not a model")
            refused = commands(
                d,
                ["demo-gw", "write", "pump1.setpoint", "12"],  # its device is offline
                ["demo-gw", "write", "pump1.nosuch", "1"],
                ["demo-gw", "ack", "no_such_rule", "--by", "op"],
                ["demo-gw", "update-model", "bearing_ae", str(tmp_path / "none")],
                ["demo-gw", "update-model", "no_such_model", str(blob)],
                [
                    "demo-gw",
                    "update-model",
                    "bearing_ae",
                    str(MODEL),
                    "--reference",
                    str(REFERENCE),
                ],
            )
            for (code, out, err), (want, text) in zip(refused, [
                (1, "demo-gw write: failed: "), (1, "unknown point"), (1, "no alarm for rule"),
                (2, "No such file"), (1, "no model named"), (0, "update-model: ok: "),
            ], strict=True):  # fmt: skip
                assert code == want and text in (err if code == 2 else out), (code, out, err)
            # The same id again is answered with the stored outcome, not run twice.
            first = command(d, "demo-gw", "reload-rules", "--id", "op-42", "--json")
            again = command(d, "demo-gw", "reload-rules", "--id", "op-42", "--json")
            assert first.returncode == again.returncode == 0, (first, again)
            doc = json.loads(first.stdout)
            assert doc["outcome"] == "ok" and doc["receiver"] == "rx1"
            assert doc["kind"] == "reload_rules" and doc["id"] == "op-42"
            assert (
                " rules, " in doc["detail"] and json.loads(again.stdout)["detail"] == doc["detail"]
            )


def test_bad_input_gets_one_line_and_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with short_dir() as d:
        res = command(d, "demo-gw", "ping")
        assert res.returncode == 5 and "no receiver's control socket" in res.stderr, res
        with cloud(d, "rx1"):
            # As subprocesses: what needs a receiver's answer, and one malformed value.
            for (code, _, err), (want, text) in zip(
                commands(d, ["nosuch-gw", "ping"], ["demo-gw", "write", "pump1.sp", "twelve"]),
                [(3, "unknown gateway 'nosuch-gw'"), (2, "must be a number")],
                strict=True,
            ):
                assert code == want and text in err and err.count("\n") == 1, (code, err)
            # The rest of the argument checks, through the same entry point in this process.
            from gateway.cli import main

            cases = [
                (["demo gw", "ping"], 2, "gateway id"),
                (["demo-gw", "write", "pump1.setpoint", "nan"], 2, "must be a number"),
                (["demo-gw", "write", "pump1.setpoint", "1e999"], 2, "must be finite"),
                (["demo-gw", "write", "setpoint", "1"], 2, "'device.point'"),
                (["demo-gw", "ack", "r1", "--by", "x\ny"], 2, "--by"),
                (["demo-gw", "ping", "--timeout", "-1"], 2, "--timeout"),
                (["demo-gw", "ping", "--id", "x" * 200], 2, "--id"),
                (["demo-gw", "update-model", "m", str(tmp_path)], 2, "model file"),
            ]
            for args, code, text in cases:
                capsys.readouterr()
                assert main(["command", *args, "--control-dir", str(d / "ctl")]) == code, args
                err = capsys.readouterr().err
                assert text in err and err.count("\n") == 1, (args, err)
            for args in (["demo-gw", "reboot"], ["demo-gw", "write", "pump1.setpoint"]):
                with pytest.raises(SystemExit) as exc:  # argparse: usage and the error
                    main(["command", *args])
                assert exc.value.code == 2


def test_offline_gateway_waits_then_times_out_or_is_reached(tmp_path: Path) -> None:
    """Offline: the CLI waits up to --timeout for the gateway to connect to any receiver; it
    exits 4 if it does not (nothing queued), and delivers the command if it does."""
    with short_dir() as d, cloud(d, "rx1") as rx:
        cfg = gateway_config(tmp_path, [rx.endpoint])
        with gateway(cfg):
            wait_online(d)
        t0 = time.monotonic()
        res = command(d, "demo-gw", "ping", "--timeout", "1.5")
        took = time.monotonic() - t0
        assert res.returncode == 4, res
        assert "demo-gw is offline: not connected to any receiver within 1.5s" in res.stderr
        assert "last seen" in res.stderr and "via rx1" in res.stderr and "not queued" in res.stderr
        assert 1.4 < took < 8, took
        # Started while the gateway is down; the gateway comes back within the timeout.
        waiting = subprocess.Popen(
            [sys.executable, "-m", "gateway", "command", "demo-gw", "reload-rules",
             "--timeout", "40", "--control-dir", str(d / "ctl")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            time.sleep(1.0)
            assert waiting.poll() is None, "the command did not wait for the offline gateway"
            with gateway(cfg):
                out, err = waiting.communicate(timeout=45)
            assert waiting.returncode == 0, (out, err)
            assert "reload-rules: ok" in out
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()


def test_two_receivers_the_command_goes_through_the_one_holding_the_gateway(
    tmp_path: Path,
) -> None:
    with short_dir() as d, cloud(d, "rx1", "c1.db") as rx1, cloud(d, "rx2", "c2.db") as rx2:
        assert sorted(p.name for p in control.receivers(str(d / "ctl"))) == [
            "rx1.sock", "rx2.sock",
        ]  # fmt: skip
        with gateway(gateway_config(tmp_path, [rx2.endpoint, rx1.endpoint])):
            wait_online(d)
            (ping, fleet, unknown) = commands_and_fleet(d)
            assert ping[0] == 0 and json.loads(ping[1])["receiver"] == "rx2", ping
            assert fleet[0] == 0, fleet
            doc = json.loads(fleet[1])
            assert sorted(doc["receivers"]) == ["rx1", "rx2"]
            assert doc["receivers"]["rx1"]["endpoint"] == rx1.endpoint
            gw = doc["gateways"]["demo-gw"]
            assert gw["receiver"] == "rx2" and gw["connected"] and gw["seen_by"] == ["rx2"]
            assert unknown[0] == 3 and "has seen 'nosuch'" in unknown[2], unknown


def commands_and_fleet(d: Path) -> list[tuple[int, str, str]]:
    """`gateway command ... ping --json`, `gateway fleet` and `gateway fleet --gateway nosuch`,
    run at once."""
    ctl = ["--control-dir", str(d / "ctl")]
    procs = [
        subprocess.Popen([sys.executable, "-m", "gateway", *args, *ctl], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for args in (["command", "demo-gw", "ping", "--json"], ["fleet"],
                     ["fleet", "--gateway", "nosuch"])
    ]  # fmt: skip
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        out.append((p.returncode, stdout, stderr))
    return out


def test_control_socket_is_private_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    with short_dir() as d:
        ctl = d / "ctl"
        ctl.mkdir(mode=0o700)
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(ctl / "rx1.sock"))  # a receiver of that name died: nobody listens
        stale.close()
        with cloud(d, "rx1"):
            path = ctl / "rx1.sock"
            assert (os.stat(path).st_mode & 0o777) == 0o600
            assert (os.stat(ctl).st_mode & 0o777) == 0o700
            answer = control.ask(path, {"op": "gateway", "gateway": "x"}, 5)
            assert answer == {"receiver": "rx1", "known": False, "session": None,
                              "last_seen": None}  # fmt: skip
            garbage = socket.socket(socket.AF_UNIX)
            garbage.settimeout(5)
            garbage.connect(str(path))
            garbage.sendall(b"\x00\x00\x00\x05hello")
            reply = garbage.recv(1000)
            garbage.close()
            assert b"unreadable request" in reply
            # A second receiver with the same name is refused with a clear message.
            from cloud_cli_support import _spawn

            dup = _spawn(
                [
                    "cloud",
                    "--insecure",
                    "--bind",
                    "tcp://127.0.0.1:0",
                    "--pub",
                    "",
                    "--db",
                    str(d / "c2.db"),
                    "--control-dir",
                    str(ctl),
                    "--name",
                    "rx1",
                ]
            )
            assert dup.proc.wait(20) == 2
            dup.wait_line("another receiver named 'rx1' is running", "the refusal")
        assert not (ctl / "rx1.sock").exists(), "the socket outlived its receiver"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another user")
def test_control_socket_refuses_another_user_even_when_the_file_allows_it(tmp_path: Path) -> None:
    """Defence in depth: with the socket's mode loosened by mistake, a peer of another uid is
    still closed without an answer (SO_PEERCRED), and counted."""
    import asyncio

    from uplink_support import run, running_receiver

    from gateway.cloud.control import ControlServer
    from gateway.cloud.store import SQLiteCloudStore

    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3 that another user may run")
    # A request {op: status}, msgpack by hand: the system python has no msgpack.
    probe = (
        "import socket, struct, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
        "b = bytes([0x81, 0xa2]) + b'op' + bytes([0xa6]) + b'status'\n"
        "try:\n"
        "    s.sendall(struct.pack('>I', len(b)) + b); print(repr(s.recv(100)))\n"
        "except (ConnectionResetError, BrokenPipeError):\n"
        "    print(\"b''\")\n"
    )

    async def main() -> None:
        with short_dir() as d:
            async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), pub_bind=None) as rx:
                server = ControlServer(rx, str(d / "ctl"), "rx1", lambda: {"ok": 1})
                await server.start()
                try:
                    os.chmod(d, 0o755)
                    os.chmod(d / "ctl", 0o755)
                    os.chmod(server.path, 0o666)
                    res = await asyncio.to_thread(
                        subprocess.run,
                        [system_python, "-c", probe, server.path],
                        capture_output=True, text=True, timeout=30,
                        user=65534, group=65534,
                    )  # fmt: skip
                    assert res.returncode == 0, res.stderr
                    assert res.stdout.strip() == "b''", res.stdout  # closed, nothing said
                    assert server.refused_peers == 1
                    mine = await asyncio.to_thread(control.ask, server.path, {"op": "status"}, 5)
                    assert mine == {"receiver": "rx1", "status": {"ok": 1}}
                finally:
                    await server.stop()

    run(main())
