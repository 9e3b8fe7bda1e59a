"""The rig operator's summary: a short text of what passed, failed and was skipped (and why).

JUnit XML comes from pytest's own ``--junitxml`` (with the rig's name and file as suite properties);
this adds the page a person reads at the rig: one line per test, the reason for every skip, the
first line of every failure, and one verdict at the bottom.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    nodeid: str
    outcome: str  # passed | failed | skipped | error
    duration: float
    detail: str = ""


def first_line(text: str, limit: int = 160) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("E "):
            line = line[1:].strip()
        if line and not line.startswith(("def ", "@", ">", "assert ")):
            return line[:limit]
    return text.strip()[:limit]


def render_summary(rig_name: str, rig_file: str, outcomes: list[Outcome], elapsed: float) -> str:
    counts = {k: sum(o.outcome == k for o in outcomes) for k in ("passed", "failed", "skipped", "error")}  # fmt: skip
    verdict = "PASS" if counts["failed"] == counts["error"] == 0 and counts["passed"] else "FAIL"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"HIL summary: rig {rig_name!r} ({rig_file}), {when}, {elapsed:.0f}s",
        f"{counts['passed']} passed, {counts['failed'] + counts['error']} failed, "
        f"{counts['skipped']} skipped",
        "",
    ]
    tag = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}
    for o in outcomes:
        name = o.nodeid.split("/")[-1]
        line = f"  {tag[o.outcome]:<5} {name}  ({o.duration:.1f}s)"
        if o.detail:
            line += f"\n        {o.detail}"
        lines.append(line)
    lines += ["", f"Result: {verdict}"]
    if verdict == "FAIL":
        lines.append(
            "Logs of failed tests are in the JUnit XML (system-out) and the pytest output."
        )
    return "\n".join(lines) + "\n"


class SummaryPlugin:
    """Collects outcomes per test (setup errors and skips included) and writes the summary."""

    def __init__(self, path: Path | None, rig_name: str, rig_file: str) -> None:
        self.path = path
        self.rig_name = rig_name
        self.rig_file = rig_file
        self.outcomes: dict[str, Outcome] = {}
        self.durations: dict[str, float] = {}
        self.t0 = time.monotonic()

    def pytest_runtest_logreport(self, report) -> None:  # type: ignore[no-untyped-def]
        took = self.durations.get(report.nodeid, 0.0) + report.duration
        self.durations[report.nodeid] = took
        prev = self.outcomes.get(report.nodeid)
        if report.skipped:
            reason = (
                report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            )
            self.outcomes[report.nodeid] = Outcome(report.nodeid, "skipped", took, reason.removeprefix("Skipped: "))  # fmt: skip
        elif report.failed:
            kind = "failed" if report.when == "call" else "error"
            crash = getattr(report.longrepr, "reprcrash", None)
            why = first_line(crash.message if crash is not None else str(report.longrepr))
            if prev is None or prev.outcome == "passed":
                self.outcomes[report.nodeid] = Outcome(report.nodeid, kind, took, why)  # fmt: skip
        elif report.when == "call":
            self.outcomes[report.nodeid] = Outcome(report.nodeid, "passed", took)
        if report.nodeid in self.outcomes:
            self.outcomes[report.nodeid].duration = took

    def text(self) -> str:
        return render_summary(
            self.rig_name, self.rig_file, list(self.outcomes.values()), time.monotonic() - self.t0
        )

    def pytest_sessionfinish(self, session) -> None:  # type: ignore[no-untyped-def]
        if self.path is not None and self.outcomes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(self.text())

    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        if self.path is not None and self.outcomes:
            terminalreporter.write_sep("-", "HIL summary")
            terminalreporter.write(self.text())
