"""The API fuzzed from its own OpenAPI document (schemathesis, a real client over loopback):
no request makes it answer 500, answers match the document, and without credentials nothing
changes state. ``GATEWAY_API_FUZZ_EXAMPLES`` (default 3) sets examples per operation; ``make
fuzz-api`` runs 200."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from api_support import Gw
from test_api import ALARM_RULE, run, until

#: `make test` runs the suite twice (compiled, pure); the API has no compiled twin: once.
pytestmark = pytest.mark.skipif(
    os.environ.get("GATEWAY_PUREPYTHON") == "1",
    reason="the fuzzer drives the API, which has no compiled twin: once, compiled",
)

EXAMPLES = int(os.environ.get("GATEWAY_API_FUZZ_EXAMPLES", "3"))
TIMEOUT = 90 + 3 * EXAMPLES  # seconds for one run (make fuzz-api: 200 examples, pytest -o timeout)
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


async def schemathesis(gw: Gw, tmp_path: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [str(st), "run", f"http://127.0.0.1:{gw.port}/api/openapi.json", "--checks", CHECKS,
           "--max-examples", str(EXAMPLES), "--seed", "13", "--exclude-path", "/api/events",
           "--request-timeout", "10", "--phases", "examples,coverage,fuzzing",
           "--suppress-health-check", "all", "--report-dir", str(tmp_path / "st"),
           *(x for h in headers for x in ("-H", h))]  # fmt: skip
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                   timeout=TIMEOUT, cwd=tmp_path)  # fmt: skip


def _state(gw: Gw) -> tuple[object, ...]:
    rt = gw.rt
    return (
        [(a.rule, a.acked_by) for a in rt.rules.alarms()],  # (raises may come and go)
        [(r.name, r.enabled) for r in rt.rules._rules],
        rt.metrics.get("rule_reloads_total", (("outcome", "applied"),)),
        gw.factory.values("pump1")["setpoint"],
        gw.factory.values("press1")["run"],
        len([e for e in gw.upstream("write") if e.get("rule") == "api"]),
    )


def test_fuzz_without_credentials_no_500_and_no_state_change(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        await until(gw, "/api/alarms?state=active_unacked", lambda d: d, "the alarm")
        before = _state(gw)
        done = await schemathesis(gw, tmp_path)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert _state(gw) == before
        assert gw.rt.metrics.get("api_refusals_total", (("reason", "unauthenticated"),)) > 0
        errors = sum(v for k, v in gw.rt.metrics._counters.items()
                     if k[0] == "api_requests_total" and dict(k[1])["code"] == "500")  # fmt: skip
        assert errors == 0

    run(tmp_path, body, timeout=TIMEOUT, extra_rules=[ALARM_RULE])


def test_fuzz_as_operator_no_500(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        done = await schemathesis(gw, tmp_path, f"Authorization: Bearer {gw.tokens['op']}")
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert (await gw.get("/health")).status in (200, 503)  # still answering
        assert gw.rt._status_server is not None and not gw.rt._status_server.faults.total

    run(tmp_path, body, timeout=TIMEOUT, extra_rules=[ALARM_RULE])
