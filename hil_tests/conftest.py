from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil_tests.report import SummaryPlugin
from hil_tests.rig import Rig
from hil_tests.rigfile import RigFileError, RigSpec, load_rig

RIG_FILE = Path(os.environ.get("GATEWAY_RIG", Path(__file__).parent / "rig.sim.yaml"))
RIG_KEY = pytest.StashKey[RigSpec]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hil-summary",
        default=None,
        help="write a short human summary of the rig run to this file (see hil_tests/README.md)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rig_needs(sim=False, writes=(), serial=False, can=False): what a test needs from the rig; "
        "a rig without it skips the test with the reason",
    )
    try:
        spec = load_rig(RIG_FILE)
    except RigFileError as exc:
        raise pytest.UsageError(f"rig file: {exc}") from None
    config.stash[RIG_KEY] = spec
    path = config.getoption("--hil-summary")
    config.pluginmanager.register(
        SummaryPlugin(Path(path) if path else None, spec.name, str(RIG_FILE)), "hil-summary"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip, with the reason, a test whose needs the rig file does not declare."""
    spec = item.config.stash[RIG_KEY]
    for mark in item.iter_markers("rig_needs"):
        if mark.kwargs.get("sim") and not spec.simulated:
            pytest.skip(f"needs simulated physics (a `sim:` section); rig {spec.name!r} has none")
        for point in mark.kwargs.get("writes", ()):
            if not spec.may_write(point):
                pytest.skip(f"writes {point}; rig {spec.name!r} does not list it under `writable:`")
        if mark.kwargs.get("serial") and not spec.serial:
            pytest.skip(f"needs serial devices; rig {spec.name!r} declares none under `serial:`")
        if mark.kwargs.get("can") and not spec.can:
            pytest.skip(f"needs CAN interfaces; rig {spec.name!r} declares none under `can:`")


@pytest.fixture(scope="session")
def rig_spec(request: pytest.FixtureRequest) -> RigSpec:
    return request.config.stash[RIG_KEY]


@pytest.fixture(scope="session", autouse=True)
def _rig_properties(
    record_testsuite_property: Callable[[str, object], None], rig_spec: RigSpec
) -> None:
    """The rig's name and file in the JUnit XML, so a report says which rig it came from."""
    record_testsuite_property("rig", rig_spec.name)
    record_testsuite_property("rig_file", str(RIG_FILE))


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
