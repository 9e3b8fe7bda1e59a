"""The runtime's side of inference: output points, ring sizes, the runner, metrics.

Kept apart from :mod:`gateway.core.runtime` so the runtime only calls three functions, and so a
gateway without models never imports the interpreter (``gateway.infer.backend`` is imported by
the runner only when a model is loaded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.core.model import SampleBatch
from gateway.core.points import PointTable

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.infer.runner import ModelRunner


def add_model_points(table: PointTable, config: GatewayConfig) -> None:
    """Add every model's output points and grow its input points' rings to fit its windows."""
    for model in config.models:
        w = model.window
        need = w.capacity or max(config.ring_capacity, 2 * w.length + w.hop)
        for name in model.inputs:
            if name in table:
                table.ensure_capacity(table.id_of(name), need)
        for out in model.outputs:
            table.add(
                f"{model.name}.{out.name}",
                model.name,
                "float32",
                unit=out.unit,
                description=f"output {out.name} of model {model.name}",
            )
            if any(f"{model.name}.{out.name}" in m.inputs for m in config.models):
                table.ensure_capacity(table.id_of(f"{model.name}.{out.name}"), need)


def model_runner(
    config: GatewayConfig,
    points: PointTable,
    deliver: Callable[[SampleBatch], None],
    on_problem: Callable[[str, str], None],
) -> ModelRunner | None:
    if not config.models:
        return None
    from gateway.infer.runner import ModelRunner

    return ModelRunner(config.models, points, deliver, on_problem)


def collect_model_metrics(
    runner: ModelRunner,
) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    out: list[tuple[str, tuple[tuple[str, str], ...], float]] = []
    for name, st in runner.stats().items():
        labels = (("model", name),)
        out.append(("model_running", labels, 1.0 if st["state"] == "running" else 0.0))
        for key in ("windows", "invocations", "inferred", "dropped", "skipped", "errors", "swaps",
                    "queued", "latency_p50_s", "latency_p99_s"):  # fmt: skip
            out.append((f"model_{key}", labels, float(st[key])))
    return out
