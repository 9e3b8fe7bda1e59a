from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.rig import Rig

RIG_FILE = Path(os.environ.get("GATEWAY_RIG", Path(__file__).parent / "rig.sim.yaml"))


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A fresh rig: devices (simulated for rig.sim.yaml), cloud receiver and gateway, all running."""
    r = Rig(RIG_FILE, tmp_path)
    r.start()
    try:
        r.wait_ready()
        yield r
    finally:
        r.stop_all()
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            print(r.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
