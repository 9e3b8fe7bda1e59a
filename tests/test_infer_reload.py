"""Swapping a model at run time through a config reload: the new file is self-tested first, and a
bad one leaves the old model running."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ai_edge_litert")

from gateway.config import load_config  # noqa: E402
from gateway.core.runtime import Runtime  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _workdir(tmp_path: Path) -> Path:
    for folder in ("examples", "rules"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    cfg_path = tmp_path / "examples" / "demo.yaml"
    doc = yaml.safe_load(cfg_path.read_text())
    doc["gateway"]["metrics_listen"] = None
    doc["uplink"]["endpoints"] = ["tcp://127.0.0.1:9"]  # nothing listens: records just queue
    doc["uplink"] = {**doc["uplink"], "insecure": True, "server_key": None, "key_dir": None}
    cfg_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg_path


def _edit_model(cfg_path: Path, **changes: object) -> None:
    doc = yaml.safe_load(cfg_path.read_text())
    model = next(m for m in doc["models"] if m["name"] == "bearing_ae")
    model.update(changes)
    cfg_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_model_swap_on_reload_and_rejection_keeps_the_old_model(tmp_path: Path) -> None:
    cfg_path = _workdir(tmp_path)

    async def main() -> None:
        runtime = Runtime(load_config(cfg_path))
        await runtime.start()
        try:
            assert runtime.models is not None
            slot = runtime.models.slots["bearing_ae"]
            first = slot.model
            # A new file with the same content and hash: loaded, self-tested, swapped.
            moved = cfg_path.parent / "models" / "bearing_ae.v2.tflite"
            shutil.copy(cfg_path.parent / "models" / "bearing_ae.tflite", moved)
            _edit_model(cfg_path, file="models/bearing_ae.v2.tflite")
            assert runtime.reload_rules()["ok"]
            await asyncio.wait_for(asyncio.gather(*runtime._write_tasks), 30)
            assert slot.model is not first and slot.state == "running"
            # A hash that does not match: rejected, the running model stays.
            second = slot.model
            _edit_model(cfg_path, sha256="0" * 64)
            assert runtime.reload_rules()["ok"]
            await asyncio.wait_for(asyncio.gather(*runtime._write_tasks), 30)
            assert slot.model is second and slot.state == "running"
            states = [e.get("state") for e in runtime.recent if e["kind"] == "model"]
            assert states[-2:] == ["swapped", "swap_rejected"]
            # Anything but file/hash/reference needs a restart: refused as a whole.
            _edit_model(cfg_path, sha256=slot.config.sha256, threads=2)
            outcome = runtime.reload_rules()
            assert not outcome["ok"] and "restart" in outcome["error"]
        finally:
            await runtime.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
