"""Downlink commands from the cloud, executed against the runtime.

The uplink has already authenticated the sender, deduplicated the command id (a command runs at
most once) and answered ``ping``; what is left is what only the runtime can do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.core import records
from gateway.drivers.modbus_tcp import WriteError

if TYPE_CHECKING:
    from gateway.core.runtime import Runtime


async def execute(rt: Runtime, kind: str, args: dict[str, Any]) -> tuple[str, str]:
    """Downlink commands from the cloud (the uplink already deduplicated and answers ping)."""
    if kind == "write":
        point, value = args.get("point"), args.get("value")
        if not isinstance(point, str) or point not in rt.device_of_point:
            return "failed", f"unknown point {point!r}"
        if not rt.points.infos[rt.points.id_of(point)].writable:
            return "failed", f"point {point} is not writable"
        if not isinstance(value, int | float | bool):
            return "failed", f"value must be a number or boolean, got {value!r}"
        try:
            await rt.devices[rt.device_of_point[point]].write(point, float(value))
        except WriteError as exc:
            outcome, detail = "failed", str(exc)
        else:
            outcome, detail = "ok", f"{point} = {value}"
        rt.metrics.inc("writes_total", labels=(("outcome", outcome),))
        rt.event("write", rt.clock(), rule="cloud", point=point, value=value,
                    outcome=outcome, detail=detail, requested_ts=rt.clock())  # fmt: skip
        return outcome, detail
    if kind == "reload_rules":
        reloaded = rt.reload_rules()
        if reloaded["ok"]:
            kept = len(reloaded["carried"])
            return "ok", f"{reloaded['rules']} rules, {kept} kept their state"
        return "failed", str(reloaded["error"])
    if kind == "ack_alarm":
        rule, by = args.get("rule"), args.get("by", "cloud")
        if not isinstance(rule, str) or not isinstance(by, str):
            return "failed", "ack_alarm needs a rule name (and optionally who acknowledged)"
        if not rt.ack_alarm(rule, by):
            return "failed", f"no alarm for rule {rule!r}"
        return "ok", f"{rule} acknowledged by {by}"
    if kind == "update_model":
        return await update_model(rt, args)
    if kind == "resend_meta":
        return resend_meta(rt)
    return "unsupported", f"unknown command {kind!r}"


def resend_meta(rt: Runtime) -> tuple[str, str]:
    """The cloud's store lacks this gateway's point model (e.g. its store was replaced): queue
    the ``meta`` record again, so telemetry ids stay decodable."""
    model, payload = records.point_model(rt.config.id, rt.points.infos)
    if not rt.uplink.submit(records.STREAM_META, payload):
        return "failed", "the uplink refused the meta record (queue full?)"
    return "ok", f"point model {model} queued"


async def update_model(rt: Runtime, args: dict[str, Any]) -> tuple[str, str]:
    """A model file sent by the cloud: stored under data_dir, then self-tested and swapped."""
    name, sha256, data = args.get("name"), args.get("sha256"), args.get("data")
    if not isinstance(name, str) or not isinstance(sha256, str) or not isinstance(data, bytes):
        return "failed", "update_model needs name, sha256 and data (the .tflite bytes)"
    if hashlib.sha256(data).hexdigest() != sha256.lower():
        return "failed", "data does not match sha256"
    folder = Path(rt.config.data_dir) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{sha256[:16]}.tflite"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # never a half-written model file under its final name
    reference = args.get("reference") if isinstance(args.get("reference"), str) else None
    result = await rt.swap_model(name, str(path), sha256, reference)
    return ("ok", str(result.get("summary", ""))) if result["ok"] else ("failed", result["error"])
