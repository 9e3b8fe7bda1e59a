"""Data-driven rule cases: tests/rules_cases/<case>/{rules.yaml, input.csv, expected.jsonl|error.txt}."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config.schema import ACTIONS, TABLES
from gateway.rules.nodes import FUNCTIONS
from gateway.rules.testcmd import RulesTestError, compare, run

CASES = Path(__file__).resolve().parent / "rules_cases"
FOLDERS = sorted(p for p in CASES.iterdir() if p.is_dir())


def test_there_are_enough_cases() -> None:
    assert len(FOLDERS) >= 30
    for folder in FOLDERS:
        files = {p.name for p in folder.iterdir()}
        assert {"rules.yaml", "input.csv"} <= files, folder.name
        assert ("expected.jsonl" in files) != ("error.txt" in files), folder.name


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_case(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)  # messages then name "rules.yaml", as the case files do
    error = folder / "error.txt"
    if error.exists():
        with pytest.raises(RulesTestError) as info:
            run("rules.yaml", "input.csv")
        for line in error.read_text().splitlines():
            assert line in str(info.value)
        return
    result = run("rules.yaml", "input.csv")
    problems = compare(result.records(), "expected.jsonl")
    assert not problems, "\n".join(problems)


def test_cases_cover_every_function_setting_and_action() -> None:
    rules_text = "\n".join((f / "rules.yaml").read_text() for f in FOLDERS)
    called = set(re.findall(r"\b([a-z0-9_]+)\(", rules_text))
    assert set(FUNCTIONS) - called == set()
    keys = set(re.findall(r"^\s*-?\s*([a-z_]+):", rules_text, re.M))
    assert {opt.key for opt in TABLES["rule"].options} - keys == set()
    assert set(ACTIONS) - keys == set()


def test_cli_replays_a_case_with_expect_and_plot(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = CASES / "delta_rate"
    png = tmp_path / "why.png"
    cmd = [sys.executable, "-m", "gateway.cli", "rules", "test", str(folder / "rules.yaml"),
           "--data", str(folder / "input.csv"), "--expect", str(folder / "expected.jsonl"),
           "--plot", str(png)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=CASES.parent.parent)
    assert out.returncode == 0, out.stderr
    assert "alarm_raised   climbing" in out.stdout and "expected: OK" in out.stderr
    assert png.stat().st_size > 10_000
    bad = [
        *cmd[:5],
        str(CASES / "error_syntax_column" / "rules.yaml"),
        "--data",
        str(CASES / "error_syntax_column" / "input.csv"),
    ]
    out = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "rules.yaml:2:29:" in out.stderr and "^" in out.stderr
