"""``gateway models test MODEL --data FILE`` and the model part of ``gateway check``.

The data file is a recording as ``gateway export`` writes it and ``gateway rules test`` replays it
(CSV ``ts,point,value[,quality]`` or wide, or JSONL; see :mod:`gateway.rules.recording`): it goes
through the same point table, window cutting, features and model as in the gateway, and every
output is printed as ``ts,<model>.<output>,value`` (itself a recording, so the outputs can be
replayed through rules); ``--plot`` adds a terminal sparkline per output with its time span.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gateway.core.model import Quality, SampleBatch
from gateway.rules.recording import Row
from gateway.timefmt import iso


def read_recording(path: str) -> list[Row]:
    """Samples ``(ts, point, value, quality)`` of a recording in file order (any format
    ``gateway export`` writes, see :mod:`gateway.rules.recording`); ValueError says what is wrong."""
    from gateway.rules.recording import read_recording as read

    return read(path)[0]


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
    unknown = {r[1] for r in rows if r[1] not in points}
    if unknown:
        print(
            f"{data}: ignoring unknown points: {', '.join(sorted(unknown)[:20])}", file=sys.stderr
        )
    used = [r for r in rows if r[1] in wanted]
    if not used:
        print(f"{data}: no samples of {', '.join(sorted(wanted))}", file=sys.stderr)
        return 1
    for t, p, v, q in used:  # one sample at a time, as a poll would deliver them
        ids = np.array([points.id_of(p)], np.uint32)
        batch = SampleBatch.uniform(ids, t, np.array([v]), Quality(q))
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
        if out:
            print(f"{'':>24} {iso(out[0][0])} .. {iso(out[-1][0])}")
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
