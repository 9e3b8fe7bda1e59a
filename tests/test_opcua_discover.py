"""``gateway discover opcua``: against asyncua's server in a child process, through the real CLI.

One server for the module (300 changing Doubles and the typed variables of
``opcua_servers.TYPED``); every run is ``python -m gateway discover ...`` with real pipes.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opcua_servers import TYPED, RunningServer, start_server

pytest.importorskip("asyncua")

ROOT = Path(__file__).resolve().parent.parent
DOUBLES = 300
PLANT = "ns=2;s=Plant"
LIMITS = (150, 120)  # MaxNodesPerBrowse, MaxNodesPerRead the server announces
TYPED_POINTS = sum(1 for ptype, *_ in TYPED.values() if ptype is not None)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    # OperationLimits below discovery's own batch size: discovery must honour them.
    srv = start_server("asyncua", doubles=DOUBLES, period_ms=500, limits=LIMITS)
    yield srv
    srv.stop()


def discover(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "discover", "opcua", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def points_of(text: str) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(text)
    (device,) = doc["devices"]
    return {p["name"]: p for p in device["points"] or []}


def check_typed(points: dict[str, dict[str, Any]], text: str, prefix: str = "typed_") -> None:
    """Each typed variable became the point TYPED says, or a commented-out line with why.
    A type or range the configuration does not accept (yet) is a comment on the line."""
    from gateway.drivers.opcua.discover_yaml import PointSchema, snake

    schema = PointSchema.of_loader()
    for browse_name, (ptype, unit, rng, writable) in TYPED.items():
        name = prefix + snake(browse_name)
        (line,) = [ln for ln in text.splitlines() if f"name: {name}," in ln]
        if ptype is None:
            assert name not in points, name
            assert line.lstrip().startswith("# - {") and "# skipped: " in line, line
            continue
        p = points[name]
        comment = line.partition("}  # ")[2]
        if ptype in schema.types:
            assert p["type"] == ptype, (name, p)
        else:
            assert "type" not in p and comment.startswith(f"{ptype} ("), line
        assert p.get("unit", "") == unit, (name, p)
        if rng and "range" not in schema.keys:
            assert f"EURange [{rng[0]:g}, {rng[1]:g}]" in comment and "range" not in p, line
        else:
            assert p.get("range") == (list(rng) if rng else None), (name, p)
        assert p.get("writable", False) is writable, (name, p)
        assert p["node"].endswith(f";s=Plant.Typed.{browse_name}"), p
    assert "ByteString has no point type" in text
    assert "array of float64 (ValueRank 1" in text


def test_discovers_typed_variables_units_ranges(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "plant.yaml"
    r = discover(server.endpoint, "--root", PLANT, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    text = out.read_text(encoding="utf-8")
    points = points_of(text)
    check_typed(points, text)
    doubles = [n for n in points if n.startswith("doubles_value")]
    assert len(doubles) == DOUBLES
    assert points["doubles_value299"]["node"] == "ns=2;s=Plant.Doubles.Value299"
    assert points["typed_temperature"]["description"] == "Oven temperature"
    assert "description" not in points["doubles_value0"]  # it only repeated the BrowseName
    device = yaml.safe_load(text)["devices"][0]
    assert device["name"] == "plant" and device["driver"] == "opcua"
    assert device["opcua"] == {
        "endpoint": server.endpoint,
        "mode": "subscribe",
        "security_policy": "None",
        "security_mode": "None",
        "insecure": True,
    }
    assert device["poll_groups"] == {"default": "1s"}
    assert f"gateway discover: {DOUBLES + TYPED_POINTS} point(s) written to {out}" in r.stderr


def test_default_root_leaves_out_the_servers_own_nodes(server: RunningServer) -> None:
    r = discover(server.endpoint, "--name", "line1")
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert doc["devices"][0]["name"] == "line1"
    points = points_of(r.stdout)
    # Everything lies under Objects/Plant: the shared prefix is dropped from the names.
    check_typed(points, r.stdout)
    assert "Server (i=2253)" in r.stdout.split("devices:")[0]
    assert not any(p["node"].startswith("i=") for p in points.values())


def test_depth_and_node_limits_are_said(server: RunningServer) -> None:
    r = discover(server.endpoint, "--root", PLANT, "--depth", "1")
    assert r.returncode == 0, r.stderr
    assert points_of(r.stdout) == {}
    assert "# Incomplete: 2 object(s) at --depth 1 not browsed further." in r.stdout
    assert "incomplete" in r.stderr
    r = discover(server.endpoint, "--root", PLANT, "--max-nodes", "50")
    assert r.returncode == 0, r.stderr
    assert len(points_of(r.stdout)) == 48  # Doubles and Typed are nodes too
    assert "stopped at --max-nodes 50" in r.stdout and "stopped at --max-nodes 50" in r.stderr


def test_reads_are_batched_within_the_servers_limits(server: RunningServer) -> None:
    """Hundreds of variables in a handful of Browse and Read requests, not one per node, and
    none larger than the server's OperationLimits allow."""
    from asyncua.client.ua_client import UaClient

    from gateway.drivers.opcua import discover as d

    sizes: dict[str, list[int]] = {"browse": [], "read": []}
    originals = {name: getattr(UaClient, name) for name in sizes}

    def counting(name: str, field: str) -> Any:
        async def call(self: UaClient, params: Any) -> Any:
            sizes[name].append(len(getattr(params, field)))
            return await originals[name](self, params)

        return call

    args = d.build_args([server.endpoint, "--root", PLANT])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(UaClient, "browse", counting("browse", "NodesToBrowse"))
        mp.setattr(UaClient, "read", counting("read", "NodesToRead"))
        text, browsed = asyncio.run(d.run(args))
    assert len(browsed.variables) == DOUBLES + len(TYPED)
    assert len(points_of(text)) == DOUBLES + TYPED_POINTS
    max_browse, max_read = LIMITS
    assert max(sizes["browse"]) == max_browse and max(sizes["read"]) == max_read, sizes
    # Browse: root, its 2 objects, ~314 variables for their properties (3 batches), DataType
    # supertypes (1). Read: root, limits, then 6 attributes per variable and 5 properties.
    assert len(sizes["browse"]) <= 6, sizes
    values = 6 * len(browsed.variables) + 5
    assert len(sizes["read"]) <= 2 + -(-values // max_read) + 1, sizes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["http://127.0.0.1:4840"], "is not an OPC UA endpoint URL"),
        (["opc.tcp://127.0.0.1:{free}"], "connection refused"),
        (
            ["{url}", "--root", "ns=2;s=NoSuchThing"],
            "the server has no such node (BadNodeIdUnknown)",
        ),
    ],
)
def test_errors_are_one_line_and_exit_2(
    server: RunningServer, args: list[str], expect: str
) -> None:
    """Through the real CLI: exit 2, one line on stderr, nothing on stdout."""
    args = [a.format(url=server.endpoint, free=_free_port()) for a in args]
    r = discover(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("gateway discover: ") and r.stderr.count("\n") == 1, r.stderr
    assert expect in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["opc.tcp://127.0.0.1:notaport"], "is not an OPC UA endpoint URL"),
        (["opc.tcp://:4840"], "is not an OPC UA endpoint URL"),
        (["{url}", "--root", "ns=2;q=Plant"], "is not a NodeId"),
        (["{url}", "--root", "i=58"], "is a ObjectType, not an Object or Variable"),
        (["{url}", "--out", "/nonexistent/dir/x.yaml"], "--out /nonexistent/dir/x.yaml: cannot write"),
        (["{url}", "--security-policy", "Basic256Sha256", "--mode", "Sign"], "needs --cert and --key"),
        (["{url}", "--security-policy", "Basic256Sha256"], "needs --mode Sign or SignAndEncrypt"),
        (["{url}", "--mode", "Sign"], "--mode Sign needs a --security-policy other than None"),
        (["{url}", "--security-policy", "Basic256Sha256", "--mode", "Sign", "--cert", "/no/c.der",
          "--key", "/no/k.pem"], "--cert /no/c.der: no such file"),
        (["{url}", "--username", "op", "--password-file", "/nonexistent"], "cannot read it"),
        (["{url}", "--depth", "-1"], "--depth must be >= 0"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line(
    server: RunningServer, args: list[str], expect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same entry point as the CLI, in this process (a subprocess each costs seconds)."""
    from gateway.drivers.opcua.discover import build_args, discover_main

    code = discover_main(build_args([a.format(url=server.endpoint) for a in args]))
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("gateway discover: ") and err.count("\n") == 1, err
    assert expect in err


def test_silent_server_times_out(tmp_path: Path) -> None:
    """A port that accepts and never answers (a frozen server): one line after --timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        port = listener.getsockname()[1]
        r = discover(f"opc.tcp://127.0.0.1:{port}", "--timeout", "0.5", timeout=30)
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        listener.close()
    assert r.returncode == 2
    assert "no answer within 0.5 s" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_names_are_unique_identifiers_from_the_path() -> None:
    from gateway.drivers.opcua.discover_yaml import IDENTIFIER, Variable, assign_names, snake

    assert snake("BarrelTemperature") == "barrel_temperature"
    assert snake("EURange") == "eu_range" and snake("Temp (°C) #2") == "temp_c_2"
    paths = [
        ("Line1", "Press", "Temperature"),
        ("Line1", "Press", "temperature"),  # the same name once snake_cased
        ("Line1", "Press", "3rd stage"),
        ("Line1", "Press", "Ölstand"),
        ("Line1", "Press", "°"),
    ]
    variables = [Variable(f"ns=2;i={i}", p) for i, p in enumerate(paths)]
    assert assign_names(variables) == ("Line1", "Press")
    names = [v.name for v in variables]
    assert names == ["temperature", "temperature_2", "p_3rd_stage", "lstand", "point"]
    assert all(IDENTIFIER.fullmatch(n) for n in names)


def test_awkward_strings_survive_the_yaml() -> None:
    """NodeIds and descriptions with YAML's special characters come back as they were."""
    from gateway.drivers.opcua.discover_yaml import Endpoint, Variable, assign_names, render

    nasty = [
        ("ns=2;s=Line 1 #3, {x}: [y]", 'He said "hot" & it\'s 5 °C, #1: {a}'),
        ("ns=3;s=- dash", "line one\nline two"),
        ("ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a", "null"),
        ("ns=1;b=M/RbKBsRVkePCePcx24oRA==", "yes"),
    ]
    variables = [
        Variable(n, ("Dev", f"v{i}"), description=d, type="float64")
        for i, (n, d) in enumerate(nasty)
    ]
    variables.append(
        Variable(
            "ns=2;s=Skip: me",
            ("Dev", "raw"),
            description="x, y",
            skip="DataType ByteString has no point type",
        )
    )
    assign_names(variables)
    text = render(
        "dev",
        Endpoint("opc.tcp://h:4840/path with space", server_certificate="a b#c.der"),
        variables,
    )
    doc = yaml.safe_load(text)
    got = [(p["node"], p["description"]) for p in doc["devices"][0]["points"]]
    assert got == nasty
    assert doc["devices"][0]["opcua"]["endpoint"] == "opc.tcp://h:4840/path with space"
    assert doc["devices"][0]["opcua"]["server_certificate"] == "a b#c.der"
    skipped = [ln for ln in text.splitlines() if "raw" in ln]
    assert len(skipped) == 1 and skipped[0].strip().startswith("# - {")
    inner = skipped[0].strip()[2:].split("  # skipped: ")[0]
    assert yaml.safe_load(inner) == [
        {"name": "raw", "node": "ns=2;s=Skip: me", "description": "x, y"}
    ]


def test_root_may_be_one_variable(server: RunningServer) -> None:
    from gateway.drivers.opcua import discover as d

    args = d.build_args([server.endpoint, "--root", "ns=2;s=Plant.Typed.Temperature"])
    text, _ = asyncio.run(d.run(args))
    points = points_of(text)
    assert list(points) == ["temperature"]
    assert points["temperature"]["unit"] == "°C" and "range: [-40, 200]" in text
    assert yaml.safe_load(text)["devices"][0]["name"] == "temperature"


def test_what_the_loader_does_not_know_is_a_comment() -> None:
    from gateway.drivers.opcua.discover_yaml import PointSchema, Variable, point_line

    v = Variable("ns=2;s=T", ("T",), type="int64", data_type="Int64", range=(0.0, 2.5))
    v.name = "t"
    full = PointSchema(frozenset({"type", "range"}), frozenset({"int64"}))
    assert point_line(v, full) == "- {name: t, node: ns=2;s=T, type: int64, range: [0, 2.5]}"
    bare = PointSchema(frozenset({"type"}), frozenset({"float64"}))
    assert point_line(v, bare) == "- {name: t, node: ns=2;s=T}  # int64 (Int64), EURange [0, 2.5]"
