"""Downlink commands from the cloud, executed against the runtime.

The uplink has already authenticated the sender, deduplicated the command id (a command runs at
most once) and answered ``ping``; what is left is what only the runtime can do. The cloud is
trusted to operate the gateway, not with its file system: every argument is checked (type,
length, finite numbers, a known set of keys per kind) before anything happens, file names are
built here from validated parts, and RESULT details are bounded (see
:mod:`gateway.uplink.cmdargs`).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import weakref
from typing import TYPE_CHECKING, Any

from gateway.bounded import clip
from gateway.core import records
from gateway.drivers.modbus_tcp import WriteError
from gateway.infer.files import ModelFileError, ModelFiles, stored_name
from gateway.infer.model import MAX_REFERENCE_BYTES
from gateway.model.birth import birth_record
from gateway.uplink import cmdargs

if TYPE_CHECKING:
    from gateway.core.runtime import Runtime

#: Arguments each command takes: key -> required.
ARGS: dict[str, dict[str, bool]] = {
    "write": {"point": True, "value": True},
    "reload_rules": {},
    "ack_alarm": {"rule": True, "by": False},
    "update_model": {"name": True, "sha256": True, "data": True, "reference": False},
    "resend_meta": {},
}
MAX_NAME = 128  # point and rule names
MAX_BY = 64  # who acknowledged an alarm
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_POINT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z")
_RULE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}\Z")
_BY = re.compile(r"[\w .@:/+-]{1,64}\Z")

_model_locks: weakref.WeakKeyDictionary[Runtime, asyncio.Lock] = weakref.WeakKeyDictionary()


async def execute(rt: Runtime, kind: str, args: dict[str, Any]) -> tuple[str, str]:
    """Run one downlink command; ``(outcome, detail)`` with a bounded detail, never raises for
    anything the cloud can send."""
    if kind not in ARGS:
        return "unsupported", f"unknown command '{clip(kind, cmdargs.MAX_KIND)}'"
    problem = _check_keys(kind, args)
    if problem:
        return "failed", problem
    if kind == "write":
        outcome, detail = await _write(rt, args)
    elif kind == "reload_rules":
        reloaded = await rt.reload_rules_async()
        if reloaded["ok"]:
            kept = len(reloaded["carried"])
            outcome, detail = "ok", f"{reloaded['rules']} rules, {kept} kept their state"
        else:
            outcome, detail = "failed", str(reloaded["error"])
    elif kind == "ack_alarm":
        outcome, detail = _ack(rt, args)
    elif kind == "resend_meta":
        outcome, detail = resend_meta(rt)
    else:
        outcome, detail = await update_model(rt, args)
    return outcome, cmdargs.detail(detail)


def _check_keys(kind: str, args: dict[str, Any]) -> str | None:
    takes = ARGS[kind]
    unknown = [k for k in args if k not in takes]
    if unknown:
        names = ", ".join(f"'{clip(str(k), 24)}'" for k in unknown[:4])
        return f"{kind} takes {', '.join(takes) or 'no arguments'}; unknown: {names}"
    missing = [k for k, required in takes.items() if required and k not in args]
    if missing:
        return f"{kind} needs {', '.join(missing)}"
    return None


def _name_problem(what: str, value: object, pattern: re.Pattern[str], hint: str) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if not 0 < len(value) <= MAX_NAME or not pattern.match(value):
        return f"{what} must be {hint} of at most {MAX_NAME} characters, got {cmdargs.value(value)}"
    return None


async def _write(rt: Runtime, args: dict[str, Any], by: str = "cloud") -> tuple[str, str]:
    """A write by the cloud, or by ``by`` through the local API (the same checks and event)."""
    point, value = args["point"], args["value"]
    problem = _name_problem("point", point, _POINT, "'device.point'")
    if problem:
        return "failed", problem
    if point not in rt.device_of_point:
        return "failed", f"unknown point {point!r}"
    if not rt.points.infos[rt.points.id_of(point)].writable:
        return "failed", f"point {point} is not writable"
    if isinstance(value, bool):
        number = float(value)
    elif isinstance(value, int | float):
        number = float(value) if abs(value) <= 1e300 else math.inf
        if not math.isfinite(number):
            return "failed", f"value must be a finite number, got {cmdargs.value(value)}"
    else:
        return "failed", f"value must be a number or boolean, got {cmdargs.value(value)}"
    try:
        await rt.devices[rt.device_of_point[point]].write(point, number)
    except WriteError as exc:
        outcome, detail = "failed", str(exc)
    else:
        outcome, detail = "ok", f"{point} = {value}"
    rt.metrics.inc("writes_total", labels=(("outcome", outcome),))
    who = {} if by == "cloud" else {"user": by}
    rt.event("write", rt.clock(), rule="cloud" if by == "cloud" else "api", point=point,
             value=value, outcome=outcome, detail=cmdargs.detail(detail),
             requested_ts=rt.clock(), **who)  # fmt: skip
    return outcome, detail


def _ack(rt: Runtime, args: dict[str, Any]) -> tuple[str, str]:
    rule, by = args["rule"], args.get("by", "cloud")
    problem = _name_problem("rule", rule, _RULE, "a rule name")
    if problem:
        return "failed", problem
    if not isinstance(by, str) or not _BY.match(by):
        return "failed", (
            f"by must be 1 to {MAX_BY} letters, digits, spaces or '_.@:/+-' (who acknowledged), "
            f"got {cmdargs.value(by)}"
        )
    if not rt.ack_alarm(rule, by):
        return "failed", f"no alarm for rule {rule!r}"
    return "ok", f"{rule} acknowledged by {by}"


def resend_meta(rt: Runtime) -> tuple[str, str]:
    """The cloud's store lacks this gateway's point model (e.g. its store was replaced): queue
    the ``meta`` record again, so telemetry ids stay decodable."""
    model, payload = birth_record(rt.config, rt.points.infos)
    if not rt.uplink.submit(records.STREAM_META, payload):
        return "failed", "the uplink refused the meta record (queue full?)"
    return "ok", f"point model {model} queued"


async def update_model(rt: Runtime, args: dict[str, Any]) -> tuple[str, str]:
    """A model file sent by the cloud: checked, stored under ``<data_dir>/models``, self-tested
    and swapped in. A rejected or failing file is removed; the old model keeps running."""
    name, sha256, data = args["name"], args["sha256"], args["data"]
    reference = args.get("reference")
    limit = rt.config.max_model_bytes
    if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.match(name):
        return "failed", f"name must be a configured model name, got {cmdargs.value(name)}"
    configured = [m.name for m in rt.config.models]
    if name not in configured:
        return "failed", (
            f"no model named '{name}' is configured (configured: {', '.join(configured) or 'none'})"
            "; the cloud replaces configured models only, a new model needs a config change"
        )
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        return "failed", f"sha256 must be 64 hex digits, got {cmdargs.value(sha256)}"
    if not isinstance(data, bytes) or not data:
        return "failed", f"data must be the .tflite file's bytes, got {cmdargs.value(data)}"
    if len(data) > limit:
        return "failed", (
            f"model of {len(data)} bytes exceeds gateway.max_model_bytes ({limit}); "
            "raise the limit in the config if the model is intended"
        )
    if reference is not None and (
        not isinstance(reference, bytes) or not 0 < len(reference) <= MAX_REFERENCE_BYTES
    ):
        return "failed", (
            "reference must be the reference JSON file's bytes (at most "
            f"{MAX_REFERENCE_BYTES}; paths on the gateway are not accepted), got "
            f"{cmdargs.value(reference)}"
        )
    sha256 = sha256.lower()
    if hashlib.sha256(data).hexdigest() != sha256:
        return "failed", "data does not match sha256"
    lock = _model_locks.setdefault(rt, asyncio.Lock())
    async with lock:  # one update at a time: they share the folder and the pruning
        return await _store_and_swap(rt, name, sha256, data, reference)


async def _store_and_swap(
    rt: Runtime, name: str, sha256: str, data: bytes, reference: bytes | None
) -> tuple[str, str]:
    files = ModelFiles(rt.config.data_dir)
    model_name = stored_name(name, sha256)
    ref_name = stored_name(name, sha256, ".reference.json")
    slot = rt.models.slots.get(name) if rt.models is not None else None
    running = slot.model.file if slot is not None and slot.model is not None else None
    in_use = {os.path.basename(running)} if running else set()
    written: list[str] = []
    try:
        path = await asyncio.to_thread(files.write, model_name, data)
        written.append(model_name)
        ref_path = None
        if reference is not None:
            ref_path = await asyncio.to_thread(files.write, ref_name, reference)
            written.append(ref_name)
    except ModelFileError as exc:
        await asyncio.to_thread(files.remove, *[n for n in written if n not in in_use])
        return "failed", str(exc)
    result = await rt.swap_model(name, path, sha256, ref_path)
    if not result["ok"]:
        await asyncio.to_thread(files.remove, *[n for n in written if n not in in_use])
        return "failed", str(result["error"])
    keep = {model_name, *written, *in_use}
    if running is not None:
        keep.add(os.path.basename(running).replace(".tflite", ".reference.json"))
    await asyncio.to_thread(files.prune, name, keep)
    return "ok", str(result.get("summary", ""))
