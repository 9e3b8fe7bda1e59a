"""Metric names in the docs are the names a running gateway exports, and every export is documented.

The truth is ``/metrics`` of a real :class:`Runtime` on loopback with one device of every driver
(Modbus TCP, Modbus RTU master and sniffer over TCP, a node over UDP, CAN on python-can's virtual
bus), a rule that raises an alarm and writes, a model, a quota small enough to drop, and one rule
reload; families that only appear after a fault (``task_errors_total``, conditions) count as
exported through the runtime's own descriptions (HELP/TYPE it registered).

A documented name is a code span ``gateway_...`` or ``name{labels}`` anywhere in the user docs,
or in a section or paragraph about metrics a span that is an exported name without its prefix
(the docs once wrote ``rule_firings`` for ``gateway_rule_firings``) or ends ``_total``/``_s``. The driver READMEs list exactly the
``gateway_device_*`` families their devices export.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import urllib.request
from pathlib import Path

from docs_support import ROOT, prose_lines, rel, sections, user_docs
from rtu_support import wait_for
from test_can_driver import DBC

from gateway.config import load_config
from gateway.core.runtime import Runtime

PREFIX = "gateway_"
_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? \S+$")
_LABEL = re.compile(r'(\w+)="')
_SPAN = re.compile(r"`([a-z][a-z0-9_]*)(\{[a-z_, ]*\})?`")

CONFIG = """
gateway: {{id: docs-gw, data_dir: {tmp}/data, metrics_listen: "127.0.0.1:0"}}
uplink: {{endpoints: ["tcp://127.0.0.1:9"], insecure: true, stream_max_bytes: 200}}
devices:
  - name: plc
    driver: modbus_tcp
    host: 127.0.0.1
    port: 9
    timeout: 50ms
    poll_groups: {{default: 50ms}}
    points:
      - {{name: temp, address: 0}}
      - {{name: run, address: 1, table: coil, type: bool, writable: true}}
  - name: meter
    driver: modbus_rtu
    unit_id: 5
    host: 127.0.0.1
    port: 9
    poll_groups: {{default: 50ms}}
    rtu: {{port: meterline, transport: tcp}}
    points:
      - {{name: volts, address: 1}}
  - name: spy
    driver: modbus_rtu
    unit_id: 6
    host: 127.0.0.1
    port: 7
    rtu: {{port: spyline, transport: tcp, sniff: true}}
    points:
      - {{name: volts, address: 1}}
  - name: tank
    driver: node
    node: {{node_id: 3, transport: udp, listen: "127.0.0.1:0", insecure: true}}
    points:
      - {{name: level, channel: 0, type: float32}}
  - name: truck
    driver: can
    can: {{interface: virtual, channel: {channel}, dbc: bus.dbc, j1939: true}}
    points:
      - {{name: rpm, signal: EEC1.EngineSpeed}}
rules:
  - name: plc_silent
    when: "stale(plc.temp, 100ms)"
    actions:
      - alarm: "plc silent"
      - write: {{point: plc.run, value: "1"}}
models:
  - name: bearing_ae
    file: models/bearing_ae.tflite
    sha256: 8685d5d9197304e9a976f59cf619f65d8e768cabf9f9be0c1b41476a97d144c0
    reference: models/bearing_ae.ref.json
    inputs: [plc.temp]
    window: {{length: 128, hop: 32, rate: 10}}
    features: {{kind: fft, bands: 16, log: true}}
    outputs:
      - {{name: score}}
"""
#: Families the events above produce; the scrape waits for them.
_AFTER_EVENTS = {"alarms_total", "writes_total", "rule_writes_total", "uplink_dropped_total",
                 "rule_reloads_total"}  # fmt: skip


def _parse(text: str) -> dict[str, list[dict[str, str]]]:
    """Prometheus text -> family -> label sets, one per sample."""
    out: dict[str, list[dict[str, str]]] = {}
    histograms = set(re.findall(r"^# TYPE (\S+) histogram$", text, re.M))
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = {k: "" for k in _LABEL.findall(m.group(2) or "")}
        labels.update(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        if family in histograms:  # a histogram's series are its family's (without `le`)
            name = family
            labels.pop("le", None)
        out.setdefault(name, []).append(labels)
    return out


def _scrape(tmp_path: Path) -> tuple[dict[str, list[dict[str, str]]], set[str], dict[str, str]]:
    """``(families with label sets, described families, device -> driver)`` of a running runtime."""
    shutil.copytree(ROOT / "examples" / "models", tmp_path / "models")
    (tmp_path / "bus.dbc").write_text(DBC)
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(CONFIG.format(tmp=tmp_path, channel=f"docs-{id(tmp_path)}"))
    config = load_config(cfg)

    async def main() -> tuple[str, set[str]]:
        rt = Runtime(config)
        stop = asyncio.Event()
        run = asyncio.create_task(rt.run(stop))
        try:
            await wait_for(lambda: rt._status_server is not None and rt._status_server.port > 0,
                           10.0, "the status server to listen")  # fmt: skip
            assert rt._status_server is not None
            url = f"http://127.0.0.1:{rt._status_server.port}/metrics"
            await wait_for(lambda: rt.metrics.get("samples_total") > 0, 10.0, "a first sample")
            reloaded = await asyncio.wait_for(rt.reload_rules_async(), 10.0)
            assert reloaded["ok"], reloaded
            loop = asyncio.get_running_loop()
            end = loop.time() + 15.0
            while True:
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url, timeout=5).read().decode()
                )
                missing = {PREFIX + n for n in _AFTER_EVENTS} - set(_parse(body))
                if not missing:
                    return body, {PREFIX + name for name in rt.metrics._help}
                assert loop.time() < end, f"timed out after 15s waiting for {missing} on /metrics"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(run, 15.0)

    body, described = asyncio.run(asyncio.wait_for(main(), 60.0))
    drivers = {d.name: d.driver for d in config.devices}
    return _parse(body), described, drivers


def _documented(doc: Path, exported: set[str]) -> dict[str, tuple[int, set[str] | None]]:
    """Metric names a doc states: name -> (line, label names or None when not given).

    Claimed are: spans ``gateway_...``, spans with labels (``x{a,b}``), and in text about
    metrics, spans ending ``_total``/``_s`` or naming an exported family without its prefix.
    """
    out: dict[str, tuple[int, set[str] | None]] = {}
    text = doc.read_text()
    in_metrics = {no for title, start, body in sections(text) if "metric" in title.lower()
                  for no in range(start, start + body.count("\n") + 2)}  # fmt: skip
    paragraph_about_metrics = False
    for no, line in prose_lines(text):
        if not line.strip():
            paragraph_about_metrics = False
        if re.match(r"\s*(Metrics\b|.*\bMetrics:)", line):
            paragraph_about_metrics = True
        about = no in in_metrics or paragraph_about_metrics
        for m in _SPAN.finditer(line):
            name, labels = m.group(1), m.group(2)
            claimed = (
                name.startswith((PREFIX, "process_"))
                or labels is not None
                or (about and (name.endswith(("_total", "_s")) or PREFIX + name in exported))
            )
            if claimed:
                given = None if labels is None else {x.strip() for x in labels[1:-1].split(",")}
                out[name] = (no, given)
    return out


def test_documented_metric_names_are_exported_and_exports_documented(tmp_path: Path) -> None:
    families, described, drivers = _scrape(tmp_path)
    exported = set(families) | described
    problems: list[str] = []
    documented_anywhere: set[str] = set()
    for doc in user_docs():
        for name, (no, labels) in _documented(doc, exported).items():
            documented_anywhere.add(name)
            if name not in exported:
                hint = f" (exported as {PREFIX}{name})" if PREFIX + name in exported else ""
                problems.append(f"{rel(doc)}:{no}: `{name}` is not exported{hint}")
            elif labels is not None and name in families:
                have = {k for sample in families[name] for k in sample}
                if labels != have:
                    problems.append(f"{rel(doc)}:{no}: `{name}` has labels {sorted(have)}, "
                                    f"the doc says {sorted(labels)}")  # fmt: skip
    undocumented = sorted(exported - documented_anywhere)
    if undocumented:
        problems.append(f"exported but documented nowhere: {', '.join(undocumented)}")
    for driver in sorted(set(drivers.values())):
        readme = ROOT / "gateway" / "drivers" / driver / "README.md"
        mine = {name for name, samples in families.items() if name.startswith(PREFIX + "device_")
                and any(drivers.get(s.get("device", "")) == driver for s in samples)}  # fmt: skip
        stated = {n for n in _documented(readme, exported) if n.startswith(PREFIX + "device_")}
        if mine != stated:
            problems.append(f"{rel(readme)}: a {driver} device exports {sorted(mine - stated)} "
                            f"not listed there; listed but not exported: {sorted(stated - mine)}")  # fmt: skip
    assert not problems, "\n".join(problems)
