"""Bad config files: refused with a clear message at start (`gateway run`), by `gateway check` and
by a reload of a running gateway, which keeps its rules. Inputs are limited before parsing: only
regular files, bounded reads, bounded nesting, alias expansion and number lengths.

The start and check cases run in a subprocess with a 1.5 GB address-space limit, so that a
regression (reading /dev/zero whole) fails the test instead of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gateway_support import ROOT, demo_workdir

from gateway.config import ConfigError, load_config
from gateway.config.input import MAX_FILE_BYTES
from gateway.core import commands
from gateway.core.runtime import Runtime

AS_LIMIT = 1536 << 20


def _merge_bomb(levels: int = 30) -> str:
    lines = ["bomb0: &m0 {a: 1}"]
    lines += [f"bomb{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _add_rule_file(text: str, entry: str) -> str:
    assert "\nrule_files:\n- " in text  # as yaml.safe_dump writes it (demo_workdir)
    return text.replace("\nrule_files:\n", f"\nrule_files:\n- {entry}\n", 1)


def _in_gateway(text: str, line: str) -> str:
    assert text.startswith("gateway:\n") and "ring_capacity" not in text
    return text.replace("gateway:\n", f"gateway:\n  {line}\n", 1)


def _write(path: Path, content: str | bytes) -> str:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return str(path)


# name -> (make(config text, work dir) -> new config text, what the message must say)
Case = tuple[Callable[[str, Path], str], str]
CASES: dict[str, Case] = {
    "5000-digit integer": (
        lambda t, d: _in_gateway(t, "ring_capacity: " + "9" * 5000),
        "a number of 5000 characters",
    ),
    "3000-deep nesting": (
        lambda t, d: t + "\nextra: " + "[" * 3000 + "]" * 3000 + "\n",
        "nested deeper than 64 levels",
    ),
    "deep nesting in a rule file": (
        lambda t, d: _add_rule_file(t, _write(d / "deep.yaml", "rules: " + "{a: " * 3000)),
        "deep.yaml:1:",
    ),
    "rule file /dev/zero": (
        lambda t, d: _add_rule_file(t, "/dev/zero"),
        "/dev/zero is a character device; only regular files are read",
    ),
    "rule file FIFO": (
        lambda t, d: (os.mkfifo(d / "fifo"), _add_rule_file(t, str(d / "fifo")))[1],
        "is a FIFO (named pipe)",
    ),
    "huge rule file": (
        lambda t, d: _add_rule_file(t, _write(d / "huge.yaml", "#" * (MAX_FILE_BYTES + 1))),
        f"at most {MAX_FILE_BYTES} are read",
    ),
    "merge-key bomb": (lambda t, d: t + _merge_bomb(), "aliases expand this to more than"),
    "alias cycle": (
        lambda t, d: t.replace("gateway:\n", "gateway: &g\n  <<: *g\n", 1),
        "(a cycle)",
    ),
    "impossible timestamp": (
        lambda t, d: _in_gateway(t, "ring_capacity: 2001-13-45"),
        "month must be in 1..12",
    ),
    "not UTF-8": (lambda t, d: t, "is not UTF-8 text (invalid start byte at line"),  # see below
    "pack parameters blown up": (
        lambda t, d: _add_rule_file(
            t,
            "{include: "
            + _write(d / "pack.yaml", "params: {x: null}\n" + "# ${x}\n" * 20_000)
            + ", params: {x: "
            + "y" * 1000
            + "}}",
        ),
        "after substituting its parameters",
    ),
    "5000 wrong values": (
        lambda t, d: t.replace("\ndevices:\n", "\ndevices:\n" + "- 1\n" * 5_000, 1),
        "more than 1000 issues; only the first are listed",
    ),
    "1 MB key": (lambda t, d: t + "? " + "k" * 1_000_000 + "\n: 1\n", "unknown key 'kkkk"),
    "reference /dev/zero": (
        lambda t, d: t.replace("reference: models/bearing_ae.ref.json", "reference: /dev/zero"),
        "/dev/zero is not a regular file",
    ),
}


RUN_TOO = {"5000-digit integer", "3000-deep nesting", "rule file /dev/zero"}


def _bad_config(tmp_path: Path, case: str) -> tuple[Path, str]:
    cfg = demo_workdir(tmp_path)
    make, expect = CASES[case]
    text = make(cfg.read_text(), tmp_path)
    cfg.write_text(text)
    if case == "not UTF-8":
        cfg.write_bytes(cfg.read_bytes() + b"# \xff\xfe\n")
    return cfg, expect


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, preexec_fn=_limited, env=env)  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_at_start_and_in_check(tmp_path: Path, case: str) -> None:
    cfg, expect = _bad_config(tmp_path, case)
    with pytest.raises(ConfigError) as err, _memory_capped():
        load_config(cfg)
    assert expect in str(err.value)
    # `gateway run` reads the config as `check` does; the three cases go through both.
    for command in ("check", "run") if case in RUN_TOO else ("check",):
        proc = _gateway(command, str(cfg))
        assert proc.returncode in (1, 2), (command, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert expect in proc.stderr, proc.stderr[-2000:]
        assert len(proc.stderr) < 300_000  # at most 1000 issues of one line


@contextlib.contextmanager
def _memory_capped() -> Iterator[None]:
    """Cap this process's address space for the block (a regression fails, not the machine)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + AS_LIMIT, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_reload_of_bad_files_keeps_the_running_rules(tmp_path: Path) -> None:
    cfg = demo_workdir(tmp_path)
    good = cfg.read_text()

    async def main() -> None:
        runtime = Runtime(load_config(cfg))
        await runtime.start()
        try:
            rules = runtime.rules
            for case in sorted(CASES):
                cfg.write_text(good)
                bad, expect = _bad_config(tmp_path / case.replace(" ", "_"), case)
                cfg.write_bytes(bad.read_bytes())
                with _memory_capped():
                    watched = runtime.poll_rule_files()  # the file watch
                    direct = runtime.reload_rules()
                    outcome, detail = await commands.execute(runtime, "reload_rules", {})
                for result in (watched, direct):
                    assert result is not None and not result["ok"], case
                    assert expect in result["error"], (case, result["error"][:500])
                    assert len(result["error"]) < 20_000
                assert outcome == "failed" and len(detail) < 512, (case, detail)
                assert runtime.rules is rules, f"{case}: the running rules were replaced"
            states = [e["state"] for e in runtime.recent if e["kind"] == "rules"]
            assert states and set(states) == {"reload_rejected"}
            cfg.write_text(good)
            assert runtime.reload_rules()["ok"]
        finally:
            await runtime.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_model_and_reference_files_are_read_bounded(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    from gateway.infer.model import MAX_REFERENCE_DEPTH, LoadedModel, ModelError, load_reference

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match=f"at most {MAX_REFERENCE_DEPTH}"):
        load_reference(str(deep), "m")
    digits = tmp_path / "digits.json"
    digits.write_text('{"windows": [[' + "9" * 5000 + ']], "outputs": [], "atol": 1}')
    with pytest.raises(ModelError, match="unusable"):
        load_reference(str(digits), "m")
    for path in ("/dev/zero", str(tmp_path)):
        with pytest.raises(ModelError, match="regular file"):
            load_reference(path, "m")
    config = load_config(demo_workdir(tmp_path / "w")).models[0]
    with pytest.raises(ModelError, match="regular file"), _memory_capped():
        LoadedModel.load(config, "/dev/zero", config.sha256)


def test_file_watch_reloads_without_stalling_the_event_loop(tmp_path: Path) -> None:
    """A large file is parsed in a worker thread: polls, rules and /health keep going meanwhile."""
    cfg = demo_workdir(tmp_path)
    good = cfg.read_text()

    async def main() -> None:
        runtime = Runtime(load_config(cfg))
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        try:
            while not runtime.health()[0]:
                await asyncio.sleep(0.05)
            # ~100k values: seconds of pure-Python YAML, then refused (unknown key).
            cfg.write_text(good + "extra: [" + ",".join(["1"] * 100_000) + "]\n")
            lag = 0.0
            loop = asyncio.get_running_loop()
            start = loop.time()
            deadline = start + 60
            while not any(e.get("state") == "reload_rejected" for e in runtime.recent):
                assert loop.time() < deadline, "timed out waiting for the reload to be rejected"
                t0 = loop.time()
                await asyncio.sleep(0.02)
                lag = max(lag, loop.time() - t0 - 0.02)
                assert runtime.health()[0], runtime.health()
            # Relative, not a wall-clock bound (the machine may be loaded): parsed on the loop,
            # the longest stall is the whole parse; in a worker it is a small part of it.
            took = loop.time() - start
            assert lag < 0.5 * took, f"the event loop stalled {lag:.2f} s of a {took:.2f} s reload"
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)

    asyncio.run(asyncio.wait_for(main(), 90))


def test_models_test_recording_must_be_a_regular_csv_file(tmp_path: Path) -> None:
    from gateway.infer.cli import read_recording

    with pytest.raises(ValueError, match="not a regular file"), _memory_capped():
        read_recording("/dev/zero")
    wide = tmp_path / "wide.csv"
    wide.write_text("1," + "p" * 200_000 + ",2\n")
    with pytest.raises(ValueError, match="not a CSV recording"):
        read_recording(str(wide))


def test_rules_test_refuses_bad_files_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    data = tmp_path / "d.csv"
    data.write_text("ts,a.b\n1,2\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("rules: " + "[" * 3000 + "\n")
    assert main(["rules", "test", str(deep), "--data", str(data)]) != 0
    assert "nested deeper than 64 levels" in capsys.readouterr().err
    with _memory_capped():
        assert main(["rules", "test", str(deep), "--data", "/dev/zero"]) != 0
    assert "not a regular file" in capsys.readouterr().err
