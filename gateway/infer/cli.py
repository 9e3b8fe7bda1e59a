"""``gateway models test MODEL --data FILE`` and the model part of ``gateway check``.

The data file is a CSV recording ``ts,point,value`` (header optional; the format ``gateway rules
test`` replays): it goes through the same point table, window cutting, features and model as in
the gateway, and every output is printed as ``ts,<model>.<output>,value``; ``--plot`` adds a
terminal sparkline per output.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np

from gateway.bounded import clip
from gateway.core.model import Quality, SampleBatch


def read_recording(path: str) -> list[tuple[float, str, float]]:
    """Rows ``(ts, point, value)`` of a CSV recording, by time; ValueError says what is wrong."""
    if not os.path.isfile(path):
        kind = "not found" if not os.path.exists(path) else "not a regular file"
        raise ValueError(f"{path}: {kind}; --data takes a CSV file of ts,point,value")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        try:
            for lineno, row in enumerate(csv.reader(f), 1):
                if not row or row[0].startswith("#"):
                    continue
                if lineno == 1 and row[0].strip().lower() in ("ts", "time", "timestamp"):
                    continue
                if len(row) != 3:
                    raise ValueError(f"{path}:{lineno}: expected ts,point,value; got {len(row)} "
                                     "fields")  # fmt: skip
                try:
                    rows.append((float(row[0]), row[1].strip(), float(row[2])))
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: ts and value must be numbers: "
                                     f"{clip(str(row))}") from None  # fmt: skip
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a CSV recording of ts,point,value: {exc}") from None
    rows.sort(key=lambda r: r[0])
    return rows


def test_main(config_path: str, model: str, data: str, plot: bool = False) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.core.runtime import build_point_table
    from gateway.infer.runner import ModelRunner

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    chosen = [m for m in config.models if m.name == model]
    if not chosen:
        known = ", ".join(m.name for m in config.models) or "none"
        print(f"{config_path}: no model '{model}'; models: {known}", file=sys.stderr)
        return 2
    try:
        rows = read_recording(data)
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    points = build_point_table(config)
    out: list[tuple[float, int, float]] = []
    runner = ModelRunner(
        tuple(chosen),
        points,
        lambda b: out.extend(
            zip(b.ts.tolist(), b.point_ids.tolist(), b.values.tolist(), strict=True)
        ),
        lambda m, msg: print(f"model {m}: {msg}", file=sys.stderr),
    )
    runner.start(thread=False)
    slot = runner.slots[model]
    if not slot.running:
        return 1
    wanted = set(chosen[0].inputs)
    unknown = {p for _, p, _ in rows if p not in points}
    if unknown:
        print(f"{data}: ignoring unknown points: {', '.join(sorted(unknown))}", file=sys.stderr)
    used = [(t, p, v) for t, p, v in rows if p in wanted]
    if not used:
        print(f"{data}: no samples of {', '.join(sorted(wanted))}", file=sys.stderr)
        return 1
    for t, p, v in used:  # one sample at a time, as a poll would deliver them
        ids = np.array([points.id_of(p)], np.uint32)
        batch = SampleBatch.uniform(ids, t, np.array([v]), Quality.GOOD)
        points.ingest(batch)
        runner.on_batch(batch)
        runner.run_pending()
    names = {int(i): points.infos[int(i)].name for i in slot.output_ids}
    for ts, key, value in out:
        print(f"{ts:.3f},{names[key]},{value:.6g}")
    st = runner.stats()[model]
    print(f"# {model}: {st['inferred']} windows, {st['skipped']} skipped, latency p50 "
          f"{st['latency_p50_s'] * 1e6:.0f} us", file=sys.stderr)  # fmt: skip
    if plot:
        for key, name in names.items():
            series = np.array([v for _, i, v in out if i == key])
            print(f"{name:>24} {sparkline(series)}  [{series.min():.3g} .. {series.max():.3g}]")
    return 0


def sparkline(values: np.ndarray, width: int = 72) -> str:
    """A one-line plot of ``values`` (resampled to ``width`` columns)."""
    if not len(values):
        return ""
    blocks = " ▁▂▃▄▅▆▇█"
    idx = np.linspace(0, len(values) - 1, min(width, len(values))).astype(int)
    v = values[idx]
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    span = hi - lo or 1.0
    return "".join(blocks[int(round((x - lo) / span * 8))] if x == x else "?" for x in v)


def check_models(config_path: str) -> int:
    """Load and self-test every model of a config; 0 when all pass or none are configured."""
    from gateway.config import load_config
    from gateway.infer.backend import RuntimeUnavailable, load_backend
    from gateway.infer.model import LoadedModel, ModelError

    config = load_config(config_path)
    if not config.models:
        return 0
    try:
        load_backend()
    except RuntimeUnavailable as exc:
        names = ", ".join(f"'{m.name}' ({m.source})" for m in config.models)
        print(f"{config_path}: models {names} not checked: {exc}", file=sys.stderr)
        return 0
    code = 0
    for m in config.models:
        try:
            summary = LoadedModel.load(m).self_test()
        except ModelError as exc:
            print(f"{m.source}: {exc}", file=sys.stderr)
            code = 1
            continue
        print(f"{Path(config_path)}: model {m.name}: {summary}")
    return code
