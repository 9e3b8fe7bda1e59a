"""``gateway check``: every error of a config in one pass, then warnings, then one verdict.

The stages a config has to pass before ``gateway run`` starts it are all run, whatever the
earlier ones found: the schema and cross checks of the loader, the rule expressions compiled as
the rule engine compiles them (every rule that was read without an issue, against the points the
file declares, so a wrong device key does not hide a typo in a rule), the libraries the
configured drivers and models need, and the models' self-tests. Nothing is printed as "OK" until
all of them passed.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from gateway.config.deps import CANTOOLS, installed, missing_dependencies
from gateway.config.errors import ConfigIssue, as_warning
from gateway.config.loader import LoadReport, load_report
from gateway.config.model import DeviceConfig, LogAction, RuleConfig
from gateway.config.models import ModelConfig


@dataclass
class Finding:
    """An error or warning; ``detail`` is extra lines shown under it (the expression, a caret)."""

    issue: ConfigIssue
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.issue}\n{self.detail}" if self.detail else str(self.issue)


@dataclass
class CheckResult:
    """What ``gateway check`` found; ``code`` is its exit status (0 ok, 1 invalid, 2 unreadable)."""

    file: str
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # model self-test summaries
    summary: str = ""  # "N devices, M points, R rules" of a valid config
    unreadable: bool = False

    @property
    def code(self) -> int:
        if self.unreadable:
            return 2
        return 1 if self.errors else 0


def check_config(path: str, *, self_test: bool = True) -> CheckResult:
    """Run every stage of the check on ``path``; never raises for a bad config."""
    report = load_report(path)
    result = CheckResult(path, [Finding(i) for i in report.issues], unreadable=report.unreadable)
    result.warnings = [Finding(as_warning(w)) for w in report.warnings]
    if report.unreadable:
        return result
    result.errors += _rule_errors(report.rules, report.points, report.virtual, report.aliases)
    missing = missing_dependencies(report.devices, report.models)
    for gap in missing:
        if gap.kind == "device":
            line, column, key = report.marks.get(gap.name, (0, 0, ""))
            result.errors.append(Finding(ConfigIssue(path, line, column, key, str(gap))))
        else:
            result.errors.append(_model_finding(report, gap.name, str(gap)))
    result.errors += _signal_errors(report, report.devices)
    if self_test and report.models and not missing:
        _self_test(report, report.models, result)
    if not result.errors and report.config is not None:
        config = report.config
        points = sum(len(device.points) for device in config.devices)
        result.summary = (
            f"{len(config.devices)} devices, {points} points, {len(config.rules)} rules"
        )
    return result


def check_main(path: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``gateway check FILE``: errors and warnings on stderr, then the verdict.

    Returns 0 if the config is valid (warnings allowed), 1 if it has errors, 2 if the file is
    missing or not YAML.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    result = check_config(path)
    for finding in [*result.errors, *result.warnings]:
        print(finding, file=err)
    warned = _count(len(result.warnings), "warning")
    if result.errors:
        counts = _count(len(result.errors), "error") + (f", {warned}" if result.warnings else "")
        print(f"{path}: {counts}", file=err)
        return result.code
    for note in result.notes:
        print(note, file=out)
    print(f"{path}: OK: {result.summary}" + (f" ({warned})" if result.warnings else ""), file=out)
    return 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _rule_errors(
    rules: Iterable[RuleConfig],
    points: dict[str, bool | None],
    virtual: set[str],
    aliases: dict[str, str] | None = None,
) -> list[Finding]:
    """Compile each rule as the engine does; one finding per rule that does not compile."""
    from gateway.core.points import PointTable
    from gateway.rules.engine import RuleEngine
    from gateway.rules.errors import RuleError

    rules = list(rules)
    if not rules:
        return []
    table = PointTable(ring_capacity=4)
    for name, writable in points.items():
        device = "virtual" if name in virtual else name.split(".", 1)[0]
        # writable None: its own value was wrong (reported); do not add a follow-up error
        table.add(name, device, "float64", writable=writable is not False)
    table.aliases = dict(aliases or {})
    found = []
    for rule in rules:
        try:
            RuleEngine([rule], table)
            continue
        except RuleError as exc:
            first = exc
        # The engine stops at a rule's first error: compile its parts one by one for the rest.
        errors: dict[str, RuleError] = {}
        for part in _parts(rule):
            try:
                RuleEngine([part], table)
            except RuleError as exc:
                errors.setdefault(str(exc), exc)
        for error in errors.values() or [first]:
            file, line = _file_line(error.source or rule.source)
            # without a file column, error.column counts inside the expression, not the line
            issue = ConfigIssue(file, line, error.file_column or 0, "", error.message)
            found.append(Finding(issue, error.pointer()))
    return found


def _signal_errors(report: LoadReport, devices: Iterable[DeviceConfig]) -> list[Finding]:
    """Each CAN point's DBC signal as the driver will lay it out at start: a float, multiplexed
    or CAN FD signal that ``gateway run`` cannot decode is an error here, not a refusal there."""
    if not installed(CANTOOLS):  # reported as a missing library
        return []
    from gateway.drivers.can.dbc import DbcError, compile_layout, load_dbc

    found = []
    for device in devices:
        if device.can is None or device.can.dbc is None:
            continue
        line, column, key = report.marks.get(device.name, (0, 0, ""))
        try:
            db = load_dbc(device.can.dbc)
        except DbcError as exc:
            found.append(Finding(ConfigIssue(report.file, line, column, key, str(exc))))
            continue
        for point in device.points:
            one = dataclasses.replace(device, points=(point,))
            try:
                compile_layout(one, {f"{device.name}.{point.name}": 0}, db)
            except DbcError as exc:
                found.append(Finding(ConfigIssue(report.file, line, column, key, str(exc))))
    return found


def _parts(rule: RuleConfig) -> list[RuleConfig]:
    """The rule cut into pieces that compile on their own: its condition (with its hysteresis),
    its clear condition, and each action under an always-true condition."""
    log = (LogAction("-"),)
    bare = dataclasses.replace(rule, when="1", clear=None, hysteresis=None, actions=log)
    parts = [dataclasses.replace(rule, clear=None, actions=log)]
    if rule.clear is not None:
        parts.append(dataclasses.replace(bare, clear=rule.clear))
    parts += [dataclasses.replace(bare, actions=(action,)) for action in rule.actions]
    return parts


def _file_line(source: str) -> tuple[str, int]:
    """``"file:line"`` -> (file, line); a source without a line number -> (source, 0)."""
    file, _, line = source.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (source, 0)


def _model_finding(report: LoadReport, name: str, message: str) -> Finding:
    model = next(m for m in report.models if m.name == name)
    file, line = _file_line(model.source)
    return Finding(ConfigIssue(file, line, 0, f"model '{name}'", message))


def _self_test(report: LoadReport, models: list[ModelConfig], result: CheckResult) -> None:
    """Load each model and run it on its reference data, as ``gateway run`` will."""
    from gateway.infer.backend import RuntimeUnavailable, load_backend
    from gateway.infer.model import LoadedModel, ModelError

    try:
        load_backend()
    except RuntimeUnavailable as exc:  # found but unusable, e.g. tflite-runtime under numpy 2
        for m in models:
            result.errors.append(_model_finding(report, m.name, str(exc)))
        return
    for m in models:
        try:
            summary = LoadedModel.load(m).self_test()
        except ModelError as exc:
            result.errors.append(_model_finding(report, m.name, str(exc)))
            continue
        result.notes.append(f"{report.file}: model {m.name}: {summary}")
