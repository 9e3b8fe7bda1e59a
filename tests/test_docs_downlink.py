"""The downlink command table in docs/store-and-forward.md is the code's, kind for kind.

The kinds come from the code that executes them (``gateway.core.commands.ARGS`` and the kinds
the uplink answers itself), the limits from the constants that enforce them, and the outcomes
from what the gateway can answer; the doc must name each and nothing else.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from docs_support import ROOT, section

from gateway.cloud.downlink import RESEND_META
from gateway.cloud.limits import Limits
from gateway.config import load_config
from gateway.core import commands
from gateway.infer.model import MAX_REFERENCE_BYTES
from gateway.uplink import cmdargs, sender, wire
from gateway.uplink.queue import COMMANDS_KEPT

DOC = ROOT / "docs" / "store-and-forward.md"
_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|(.*)\|\s*$")


def _code_kinds() -> set[str]:
    """Kinds the gateway executes: the runtime's table plus those the uplink answers itself."""
    answered = re.findall(r'cmd\.kind == "(\w+)"', inspect.getsource(sender))
    assert answered, "the uplink answers no command itself any more: update this test"
    return set(commands.ARGS) | set(answered)


def _table() -> dict[str, list[str]]:
    """The command table: kind -> its other cells."""
    rows = {}
    for line in section(DOC, "Downlink commands").splitlines():
        m = _ROW.match(line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def _numbers(text: str) -> set[int]:
    """Every integer the text states, also as ``10,000`` or ``32 MiB``."""
    out = set()
    for m in re.finditer(r"(\d[\d,]*)(\s*MiB)?", text):
        n = int(m.group(1).replace(",", ""))
        out.add(n << 20 if m.group(2) else n)
    return out


def test_the_command_table_is_the_codes_kind_for_kind() -> None:
    """Every kind the gateway executes and no other, each with its arguments (required or
    optional), who sends it and what an ``ok`` RESULT carries."""
    table = _table()
    documented = set(table)
    assert documented == _code_kinds(), (
        f"docs/store-and-forward.md 'Downlink commands': missing {_code_kinds() - documented}, "
        f"not in the code {documented - _code_kinds()}"
    )
    for kind, cells in table.items():
        assert len(cells) == 3, f"{kind}: expected columns arguments | sent by | RESULT: {cells}"
        args, sent_by, result = cells
        takes = commands.ARGS.get(kind, {})
        named = set(re.findall(r"`(\w+)`", args))
        assert named == set(takes), f"{kind}: documented arguments {named}, the code takes {takes}"
        if not takes:
            assert args == "none", f"{kind}: takes no arguments, the doc says {args!r}"
        for name, required in takes.items():
            optional = re.search(rf"`{name}`\s*\(optional", args) is not None
            assert optional != required, f"{kind}: `{name}` required={required} in the code"
        assert sent_by, f"{kind}: say who sends it"
        assert "`ok`" in result, f"{kind}: say what an `ok` RESULT carries"
    assert "receiver" in table[RESEND_META][1], "resend_meta is the receiver's own command"


def test_the_stated_limits_and_outcomes_are_the_enforced_ones(tmp_path: Path) -> None:
    text = section(DOC, "Downlink commands")
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        f"gateway: {{id: gw, data_dir: {tmp_path}}}\n"
        'uplink: {endpoints: ["tcp://127.0.0.1:9"], insecure: true}\ndevices: []\n'
    )
    default_model_bytes = load_config(cfg).max_model_bytes
    stated = _numbers(text)
    limits = Limits()
    enforced = {
        "cmdargs.MAX_ID": cmdargs.MAX_ID,
        "cmdargs.MAX_KIND": cmdargs.MAX_KIND,
        "cmdargs.MAX_DETAIL": cmdargs.MAX_DETAIL,
        "commands.MAX_NAME": commands.MAX_NAME,
        "commands.MAX_BY": commands.MAX_BY,
        "Limits.max_commands": limits.max_commands,
        "Limits.max_commands_per_gateway": limits.max_commands_per_gateway,
        "queue.COMMANDS_KEPT": COMMANDS_KEPT,
        "infer.model.MAX_REFERENCE_BYTES": MAX_REFERENCE_BYTES,
        "gateway.max_model_bytes (default)": default_model_bytes,
    }
    missing = {k: v for k, v in enforced.items() if v not in stated}
    assert not missing, f"docs/store-and-forward.md does not state these limits: {missing}"
    outcomes = set(re.findall(r"``(\w+)``", inspect.getdoc(wire.Result) or ""))
    assert outcomes >= {"ok", "failed", "unsupported", "interrupted"}, outcomes
    unnamed = {o for o in outcomes if f"`{o}`" not in text}
    assert not unnamed, f"RESULT outcomes the doc does not explain: {unnamed}"


def test_every_other_list_of_command_kinds_names_them_all() -> None:
    """The README's summary and the CMD row of the message table list the same kinds."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    summary = re.search(r"commands down \(([^)]*)\)", readme)
    assert summary, "README.md: the sentence 'The cloud can send commands down (...)' is gone"
    cmd_row = next(line for line in DOC.read_text().splitlines() if line.startswith("| CMD"))
    for where, text in (("README.md", summary.group(1)), ("the CMD row", cmd_row.split("|")[4])):
        listed = set(re.findall(r"`(\w+)`", text))
        assert listed == _code_kinds(), f"{where} lists {listed}, the code has {_code_kinds()}"
