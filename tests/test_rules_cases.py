"""Data-driven rule cases: tests/rules_cases/<case>/{rules.yaml, input.csv, expected.jsonl|error.txt}."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config_schema import ACTIONS, TABLES
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
