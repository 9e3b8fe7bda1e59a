"""``gateway users`` and ``gateway run`` as an operator uses them: real subprocesses, real pipes.

A listener on a non-loopback address with no API user is refused at start with a message that
says what to do; ``gateway users add`` makes one (token on stdout, once), and then the gateway
starts and the token works over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from gateway_support import demo_workdir

from gateway.api.auth import UserFile, UsersError, check_password

#: `make test` runs the suite twice (compiled, pure); the CLI has no compiled twin: once.
pytestmark = pytest.mark.skipif(
    os.environ.get("GATEWAY_PUREPYTHON") == "1",
    reason="subprocesses of the CLI, which has no compiled twin: once, compiled",
)


def gateway(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], input=stdin, text=True,
                          capture_output=True, timeout=timeout)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_non_loopback_listener_needs_a_user_which_gateway_users_makes(tmp_path: Path) -> None:
    cfg = demo_workdir(tmp_path)
    port = free_port()
    doc = yaml.safe_load(cfg.read_text())
    doc["gateway"]["metrics_listen"] = f"0.0.0.0:{port}"
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))

    refused = gateway("run", str(cfg))
    assert refused.returncode == 1
    assert "is not a loopback address and no API user exists" in refused.stderr
    assert f"gateway users add {cfg} NAME --role operator" in refused.stderr
    assert "Traceback" not in refused.stderr

    bad = gateway("users", "add", str(cfg), "no spaces allowed", "--role", "operator")
    assert bad.returncode == 1 and "user name" in bad.stderr and not bad.stdout

    added = gateway("users", "add", str(cfg), "alice", "--role", "operator")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) >= 40 and "\n" not in token
    pw = gateway("users", "add", str(cfg), "bob", "--password-stdin", "--no-token",
                 stdin="a long password\n")  # fmt: skip
    assert pw.returncode == 0 and pw.stdout == ""
    users = json.loads((tmp_path / "gw" / "data" / "users.json").read_text())["users"]
    assert check_password("a long password", users["bob"]["password"])
    listed = gateway("users", "list", str(cfg))
    assert listed.stdout.splitlines() == ["alice\toperator\ttokens", "bob\tread\tpassword"]

    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", str(cfg)], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/whoami"
        deadline = time.monotonic() + 30
        while True:
            try:
                req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    who = json.loads(resp.read())
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "timed out after 30s waiting for the API"
                time.sleep(0.2)
        assert who == {"user": "alice", "role": "operator", "via": "token"}
        removed = gateway("users", "remove", str(cfg), "alice")
        assert removed.returncode == 0
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError("a removed user's token still works")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_users_file_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    users = UserFile(tmp_path)
    with pytest.raises(UsersError, match="at least 8"):
        users.add("bob", "read", "short", token=False)
    with pytest.raises(UsersError, match="role"):
        users.add("bob", "admin", None, token=True)
    with pytest.raises(UsersError, match="no user"):
        users.remove("bob")
    (tmp_path / "users.json").write_text("{not json")
    with pytest.raises(UsersError, match="unreadable"):
        users.users()
