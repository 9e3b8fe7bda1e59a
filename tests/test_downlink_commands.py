"""Downlink commands through the real path (CloudReceiver -> CurveZMQ-less loopback -> Uplink ->
Runtime): the cloud operates the gateway but cannot write files outside ``<data_dir>/models``,
leave rejected files behind, or flood the log with a command's payload."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from gateway_support import MODEL, REFERENCE, files_under, running_gateway
from uplink_support import bounded, run

pytest.importorskip("ai_edge_litert")

SHA = hashlib.sha256(MODEL.read_bytes()).hexdigest()


def _version(pad: int) -> tuple[bytes, str]:
    """A distinct but loadable copy of the demo model (LiteRT ignores trailing bytes)."""
    blob = MODEL.read_bytes() + b"\0" * pad
    return blob, hashlib.sha256(blob).hexdigest()


def test_model_names_cannot_leave_the_models_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outside = tmp_path / "outside"
    outside.mkdir()

    async def main() -> None:
        async with running_gateway(tmp_path) as (rx, runtime, cfg):
            before = files_under(tmp_path) - files_under(tmp_path / "gw" / "examples" / "var")
            data_dir = tmp_path / "gw" / "data"

            async def update(**args: object) -> tuple[str, str]:
                res = await bounded(rx.command("demo-gw", "update_model", args), "RESULT", 30)
                return res.outcome, res.detail

            blob = MODEL.read_bytes()
            for name in ("../../outside/evil", str(outside / "evil"), "bearing_ae/../x",
                         "no_such_model", "bearing-ae", "", "a" * 5000):  # fmt: skip
                outcome, detail = await update(name=name, sha256=SHA, data=blob)
                assert not list(outside.iterdir()), f"{name[:40]!r} wrote outside data_dir"
                assert outcome == "failed" and "name" in detail and len(detail) < 512, detail
            outcome, detail = await update(name="bearing_ae", sha256="0" * 64, data=blob)
            assert outcome == "failed" and "sha256" in detail
            outcome, detail = await update(name="bearing_ae", sha256="../x", data=blob)
            assert outcome == "failed" and "sha256" in detail
            # A reference is the file's bytes; a path on the gateway is not accepted.
            outcome, detail = await update(
                name="bearing_ae", sha256=SHA, data=blob, reference="/etc/passwd"
            )
            assert outcome == "failed" and "reference" in detail
            outcome, detail = await update(name="bearing_ae", sha256=SHA, data=blob, extra=1)
            assert outcome == "failed" and "unknown" in detail
            after = files_under(tmp_path) - files_under(tmp_path / "gw" / "examples" / "var")
            assert after - before == set(), "a refused update_model left files behind"
            assert not list(outside.iterdir())
            assert not (data_dir / "models").exists() or not list((data_dir / "models").iterdir())
            # The other commands' arguments: types, lengths, non-finite values.
            for kind, args in [
                ("write", {"point": "pump1.setpoint", "value": float("nan")}),
                ("write", {"point": "pump1.setpoint", "value": float("inf")}),
                ("write", {"point": "pump1.setpoint", "value": "17"}),
                ("write", {"point": "x" * 100_000, "value": 1}),
                ("write", {"point": ["pump1.setpoint"], "value": 1}),
                ("ack_alarm", {"rule": "overheat", "by": "y" * 100_000}),
                ("ack_alarm", {"rule": "overheat", "by": "op\nFAKE LOG LINE"}),
                ("ack_alarm", {"rule": {"nested": [1, 2]}}),
                ("reload_rules", {"path": "/etc/passwd"}),
            ]:
                res = await bounded(rx.command("demo-gw", kind, args), f"RESULT of {kind}")
                assert res.outcome == "failed" and len(res.detail) < 512, (kind, res)
            res = await bounded(rx.command("demo-gw", "z" * 1000, {}), "RESULT of a long kind")
            assert res.outcome == "failed" and len(res.detail) < 512
            # An id longer than the commands table keeps is refused, not recorded.
            res = await bounded(rx.command("demo-gw", "ping", command_id="i" * 5000), "long id")
            assert res.outcome == "failed" and "command id of 5000" in res.detail, res

    run(main(), timeout=90)
    # Logs carry a bounded summary of each command, never its payload.
    longest = max(len(r.getMessage()) for r in caplog.records)
    assert longest < 4000, f"a log line of {longest} characters"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "y" * 200 not in text and "x" * 200 not in text and "FAKE LOG LINE\n" not in text
    assert "<2048 bytes>" in text


def test_model_size_limit_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    big = os.urandom(3000)

    async def main() -> None:
        async with running_gateway(tmp_path, max_model_bytes=2500) as (rx, runtime, cfg):
            args = {"name": "bearing_ae", "sha256": hashlib.sha256(big).hexdigest(), "data": big}
            res = await bounded(rx.command("demo-gw", "update_model", args), "RESULT", 30)
            assert res.outcome == "failed" and "max_model_bytes" in res.detail, res
            assert not (tmp_path / "gw" / "data" / "models").exists()

    run(main(), timeout=60)


def test_failed_and_old_model_files_are_removed_and_symlinks_are_not_followed(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bad_ref = REFERENCE.read_text().replace('"atol": ', '"atol": -1, "x": ', 1).encode()

    async def main() -> None:
        async with running_gateway(tmp_path) as (rx, runtime, cfg):
            models = tmp_path / "gw" / "data" / "models"
            assert runtime.models is not None
            slot = runtime.models.slots["bearing_ae"]

            async def update(blob: bytes, sha: str, **extra: object) -> tuple[str, str]:
                args = {"name": "bearing_ae", "sha256": sha, "data": blob, **extra}
                res = await bounded(rx.command("demo-gw", "update_model", args), "RESULT", 30)
                return res.outcome, res.detail

            # A self-test that fails: refused, the old model runs on, nothing is left behind.
            first = slot.model
            blob, sha = _version(16)
            outcome, detail = await update(blob, sha, reference=bad_ref)
            assert outcome == "failed" and "self-test" in detail, detail
            assert slot.model is first
            assert sorted(p.name for p in models.iterdir()) == []
            # Not a model at all (hash right): refused and removed.
            junk = b"not a tflite file" * 10
            outcome, detail = await update(junk, hashlib.sha256(junk).hexdigest())
            assert outcome == "failed" and sorted(models.iterdir()) == []
            # Four good versions in a row: the running one and the one before stay, no more.
            names = []
            for pad in (1, 2, 3, 4):
                blob, sha = _version(pad)
                outcome, detail = await update(blob, sha, reference=REFERENCE.read_bytes())
                assert outcome == "ok", detail
                names.append(f"bearing_ae-{sha[:16]}")
            left = sorted(p.name for p in models.iterdir())
            assert left == sorted(f"{n}{s}" for n in names[-2:]
                                  for s in (".tflite", ".reference.json")), left  # fmt: skip
            assert slot.model is not None and slot.model.file == str(models / f"{names[-1]}.tflite")
            # A symlink planted at the next target name is replaced, not followed.
            blob, sha = _version(5)
            victim = outside / "victim"
            victim.write_bytes(b"keep me")
            (models / f"bearing_ae-{sha[:16]}.tflite").symlink_to(victim)
            outcome, detail = await update(blob, sha)
            assert outcome == "ok", detail
            assert victim.read_bytes() == b"keep me"
            # models/ itself a symlink to somewhere else: refused, nothing written there.
            for p in models.iterdir():
                p.unlink()
            models.rmdir()
            models.symlink_to(outside, target_is_directory=True)
            blob, sha = _version(6)
            outcome, detail = await update(blob, sha)
            assert outcome == "failed" and "symlink" in detail, detail
            assert sorted(p.name for p in outside.iterdir()) == ["victim"]

    run(main(), timeout=120)
