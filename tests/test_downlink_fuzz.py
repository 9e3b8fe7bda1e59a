"""Downlink commands under hypothesis at the message level: arbitrary kinds and argument maps
(nested, huge, wrong types, NaN, traversal names, real and junk model files) through
``commands.execute`` on a real Runtime and through a real receiver and the gateway's Uplink.

Never an exception out of the handler, never a file outside ``<data_dir>/models``, a RESULT
detail of at most 512 characters, log lines without payloads. Example counts scale with
``GATEWAY_FUZZ_EXAMPLES`` (``make fuzz`` raises it); the default keeps the suite fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from gateway_support import MODEL, REFERENCE, demo_workdir, files_under, running_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uplink_support import bounded, run

from gateway.config import load_config
from gateway.core import commands
from gateway.core.runtime import Runtime
from gateway.uplink.cmdargs import MAX_DETAIL

pytest.importorskip("ai_edge_litert")

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))  # fmt: skip
OUTCOMES = {"ok", "failed", "unsupported"}
BLOB = MODEL.read_bytes()

names = st.sampled_from([
    "bearing_ae", "motor_state", "../x", "../../outside/evil", "/tmp/evil", "bearing_ae/../../x",
    "a" * 300, "", "bearing_ae\x00", "pump1.setpoint", "press1.run", "pump1.flow", "x.y",
    "motor1_vibration_zone", "overheat", "op\nINJECTED",
])  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=64)
    | names
    | st.builds(lambda n: "z" * n, st.integers(0, 200_000))
    | st.builds(lambda n: b"\0" * n, st.integers(0, 100_000))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    ["point", "value", "rule", "by", "name", "sha256", "data", "reference", "path", "x" * 100]
) | st.text(max_size=12)


@st.composite
def model_update(draw: st.DrawFn) -> dict[str, Any]:
    """update_model arguments that reach the file system: the hash matches the data."""
    data = draw(st.sampled_from([BLOB, BLOB + b"\0" * 7, b"junk" * 10, b"\x00"]))
    args: dict[str, Any] = {"name": draw(names), "sha256": hashlib.sha256(data).hexdigest(),
                            "data": data}  # fmt: skip
    ref = draw(st.sampled_from([None, REFERENCE.read_bytes(), b"[[[[", b"{}", "/etc/passwd"]))
    if ref is not None:
        args["reference"] = ref
    return args


kinds = st.sampled_from(["write", "reload_rules", "ack_alarm", "update_model"]) | st.text(
    max_size=40
)
commands_ = st.tuples(kinds, st.dictionaries(keys, values, max_size=5)) | st.tuples(
    st.just("update_model"), model_update()
)


def _outside(tmp: Path) -> set[Path]:
    """Files below the test's tmp dir that are not the gateway's own data or queue."""
    own = (tmp / "gw" / "data", tmp / "gw" / "examples" / "var")
    return {p for p in files_under(tmp) if not any(p.is_relative_to(o) for o in own)}


def test_execute_never_raises_and_writes_only_under_data_dir(tmp_path: Path) -> None:
    cfg = demo_workdir(tmp_path)
    loop = asyncio.new_event_loop()
    runtime = Runtime(load_config(cfg))
    loop.run_until_complete(runtime.start())
    before = _outside(tmp_path)
    models = tmp_path / "gw" / "data" / "models"

    @SETTINGS
    @given(command=commands_)
    def check(command: tuple[str, dict[str, Any]]) -> None:
        kind, args = command
        outcome, detail = loop.run_until_complete(
            asyncio.wait_for(commands.execute(runtime, kind, args), 30)
        )
        assert outcome in OUTCOMES and isinstance(detail, str)
        assert len(detail) <= MAX_DETAIL, (kind, detail[:200])
        assert _outside(tmp_path) == before, f"{kind} wrote outside data_dir"
        if models.exists():
            stored = [p.name for p in models.iterdir()]
            assert len(stored) <= 8, stored  # running + previous version per model, with refs
            assert not [n for n in stored if n.endswith(".tmp")], stored

    try:
        check()
    finally:
        loop.run_until_complete(runtime.stop())
        loop.close()


def test_command_dispatch_over_the_wire(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    wire_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
        | st.text(max_size=40) | st.binary(max_size=64) | names
        | st.builds(lambda n: "z" * n, st.integers(0, 100_000)),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                     max_size=3),
        max_leaves=8,
    )  # fmt: skip
    # An empty kind is not a CMD the wire accepts (dropped as undecodable, never answered).
    over_wire = st.tuples(
        kinds.filter(bool), st.dictionaries(keys, wire_values, max_size=4)
    ) | st.tuples(st.just("update_model"), model_update())

    async def main() -> None:
        async with running_gateway(tmp_path) as (rx, runtime, cfg):
            before = _outside(tmp_path)
            loop = asyncio.get_running_loop()
            seen: list[str] = []

            @settings(SETTINGS, max_examples=max(10, EXAMPLES // 5))
            @given(command=over_wire)
            def check(command: tuple[str, dict[str, Any]]) -> None:
                seen.append(command[0])
                future = asyncio.run_coroutine_threadsafe(
                    bounded(rx.command("demo-gw", *command), "RESULT", 30), loop
                )
                res = future.result(40)
                assert res.outcome in OUTCOMES, res
                assert len(res.detail) <= MAX_DETAIL

            await asyncio.to_thread(check)
            assert _outside(tmp_path) == before
            assert len(seen) >= 10, seen

    run(main(), timeout=300)
    longest = max(len(r.getMessage()) for r in caplog.records)
    assert longest < 4000, f"a log line of {longest} characters"
