"""The API's routes: reads (any user; anonymous on loopback) and actions (operators).

Every action goes through the path its other callers use: acknowledge is the cloud's
``ack_alarm`` (:mod:`gateway.core.commands`), reload is the file watch's all-or-nothing reload
(:mod:`gateway.core.reload`), a write is the cloud's ``write`` with the user as its author.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from typing import Any

import numpy as np

from gateway.api import events, views
from gateway.api.app import ApiError, Call, Route
from gateway.api.openapi import document
from gateway.config import ConfigError, load_config_text
from gateway.config.errors import format_issues
from gateway.core import commands
from gateway.core.httpd import Response
from gateway.core.reload import build_rule_engine
from gateway.impl import modbus

_log = logging.getLogger("gateway.api")
WRITE_MIN_INTERVAL = 1.0  # s between API writes to one point (rules default to the same)
POLL_TIMEOUT = 5.0
MAX_CONFIG_BYTES = 60 * 1024
MAX_LIST_SAMPLES = 100_000


def _int(call: Call, key: str, default: int, lo: int, hi: int) -> int:
    raw = call.req.query.get(key)
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ApiError(400, f"{key} must be an integer from {lo} to {hi}") from None
    if not lo <= n <= hi:
        raise ApiError(400, f"{key} must be an integer from {lo} to {hi}")
    return n


def _ok(doc: Any) -> Response:
    return Response.json(200, doc)


# -- reads ------------------------------------------------------------------------------------
async def openapi(call: Call) -> Response:
    return _ok(document())


async def whoami(call: Call) -> Response:
    u = call.user
    if u is None:
        return _ok({"user": None, "role": "read", "via": "loopback"})
    return _ok({"user": u.name, "role": u.role, "via": u.via})


async def devices(call: Call) -> Response:
    return _ok([views.device(call.rt, n) for n in call.rt.devices])


def _device_name(call: Call) -> str:
    name = call.params["name"]
    if name not in call.rt.devices:
        raise ApiError(404, f"no device {name!r}")
    return name


async def device(call: Call) -> Response:
    return _ok(views.device(call.rt, _device_name(call)))


async def points(call: Call) -> Response:
    rt = call.rt
    dev = call.req.query.get("device")
    samples = _int(call, "samples", 0, 0, views.MAX_SAMPLES)
    chosen = [i.id for i in rt.points.infos if dev is None or i.device == dev]
    if samples * len(chosen) > MAX_LIST_SAMPLES:  # one answer stays a few MB at most
        raise ApiError(400, f"{len(chosen)} points x {samples} samples is more than "
                       f"{MAX_LIST_SAMPLES}; filter by device or ask for fewer samples")  # fmt: skip
    return _ok([views.point(rt, pid, samples) for pid in chosen])


def _point_id(call: Call) -> int:
    name = call.params["name"]
    if name not in call.rt.points:
        raise ApiError(404, f"no point {name!r}")
    return call.rt.points.id_of(name)


async def point(call: Call) -> Response:
    samples = _int(call, "samples", 100, 0, views.MAX_SAMPLES)
    return _ok(views.point(call.rt, _point_id(call), samples))


ALARM_STATES = ("normal", "active_unacked", "active_acked", "cleared_unacked")


async def alarms(call: Call) -> Response:
    q = call.req.query
    state, severity, active = q.get("state"), q.get("severity"), q.get("active")
    if state is not None and state not in ALARM_STATES:
        raise ApiError(400, f"state must be one of {', '.join(ALARM_STATES)}")
    if active is not None and active not in ("true", "false"):
        raise ApiError(400, "active must be true or false")
    out = [
        a for a in views.alarms(call.rt)
        if (state is None or a["state"] == state)
        and (severity is None or a["severity"] == severity)
        and (active is None or a["active"] == (active == "true"))
    ]  # fmt: skip
    return _ok(out)


async def rules(call: Call) -> Response:
    return _ok(views.rules(call.rt))


async def rule(call: Call) -> Response:
    name = call.params["name"]
    for r in views.rules(call.rt):
        if r["name"] == name:
            return _ok(r)
    raise ApiError(404, f"no rule {name!r}")


async def models(call: Call) -> Response:
    return _ok(views.models(call.rt))


async def uplink(call: Call) -> Response:
    return _ok(views.uplink(call.rt))


async def stream(call: Call) -> Response:
    interval = _int(call, "interval_ms", 1000, 200, 10_000) / 1000.0
    return events.open_stream(call.rt, interval)


# -- actions ----------------------------------------------------------------------------------
async def ack(call: Call) -> Response:
    rule_name = call.params["rule"]
    call.json()  # no arguments, but a body must still be JSON
    outcome, detail = commands._ack(call.rt, {"rule": rule_name, "by": call.by})
    if outcome != "ok":
        code = 404 if detail.startswith("no alarm") else 400
        raise ApiError(code, detail)
    _log.info("api: alarm %s acknowledged by %s from %s", rule_name, call.by, call.req.peer)
    states = {a["rule"]: a for a in views.alarms(call.rt)}
    return _ok({"ok": True, "detail": detail, "alarm": states.get(rule_name)})


_last_write: dict[tuple[int, str], float] = {}


async def write(call: Call) -> Response:
    rt = call.rt
    pid = _point_id(call)
    name = rt.points.infos[pid].name
    body = call.json()
    if set(body) != {"value"}:
        raise ApiError(400, 'body must be {"value": <number or boolean>}')
    if not rt.points.infos[pid].writable:
        raise ApiError(403, f"point {name} is not writable (writable: true in the config)")
    now = time.monotonic()
    key = (id(rt), name)
    last = _last_write.get(key)
    if last is not None and now - last < WRITE_MIN_INTERVAL:
        wait = WRITE_MIN_INTERVAL - (now - last)
        raise ApiError(429, f"write {name} refused: rate limit (one write per "
                       f"{WRITE_MIN_INTERVAL:g}s per point)",
                       [("Retry-After", str(max(1, round(wait))))])  # fmt: skip
    _last_write[key] = now
    outcome, detail = await commands._write(rt, {"point": name, "value": body["value"]},
                                            by=call.by)  # fmt: skip
    _log.info("api: write %s = %r by %s from %s: %s %s", name, body["value"], call.by,
              call.req.peer, outcome, detail)  # fmt: skip
    if outcome != "ok":
        code = 400 if "must be" in detail else 502
        raise ApiError(code, detail)
    return _ok({"ok": True, "detail": detail})


async def reload_rules(call: Call) -> Response:
    call.json()
    _log.info("api: rule reload by %s from %s", call.by, call.req.peer)
    result = await call.rt.reload_rules_async()
    return Response.json(200 if result["ok"] else 422, result)


async def validate_config(call: Call) -> Response:
    body = call.json()
    text = body.get("yaml")
    if set(body) != {"yaml"} or not isinstance(text, str):
        raise ApiError(400, 'body must be {"yaml": "<the candidate config file>"}')
    if len(text) > MAX_CONFIG_BYTES:
        raise ApiError(413, f"config larger than {MAX_CONFIG_BYTES} characters")
    source = call.rt.config.source or "candidate.yaml"

    def check() -> list[str]:
        try:
            load_config_text(text, source)
        except ConfigError as exc:
            return format_issues(exc).splitlines()
        return []

    issues = await asyncio.to_thread(check)
    return _ok({"ok": not issues, "issues": issues[:200]})


async def enable(call: Call) -> Response:
    return await _set_enabled(call, True)


async def disable(call: Call) -> Response:
    return await _set_enabled(call, False)


async def _set_enabled(call: Call, on: bool) -> Response:
    """Through the reload path (a new engine, unchanged rules keep their state), until the
    config file is reloaded: the file stays the truth."""
    rt = call.rt
    name = call.params["name"]
    call.json()
    async with rt._reload_lock:
        if name not in rt.rules.rule_names:
            raise ApiError(404, f"no rule {name!r}")
        new_rules = tuple(dataclasses.replace(r, enabled=on) if r.name == name else r
                          for r in rt.config.rules)  # fmt: skip
        new = dataclasses.replace(rt.config, rules=new_rules)
        rt.rules = build_rule_engine(new, rt.points, previous=rt.rules)
        rt.config = new
        rt._apply(rt.rules.initial_effects)
    state = "enabled" if on else "disabled"
    _log.info("api: rule %s %s by %s from %s", name, state, call.by, call.req.peer)
    rt.event("rules", rt.clock(), state=state, rule=name, user=call.by)
    return _ok({"ok": True, "rule": next(r for r in views.rules(rt) if r["name"] == name)})


async def poll_once(call: Call) -> Response:
    rt = call.rt
    name = _device_name(call)
    dev = rt.devices[name]
    plan = getattr(dev, "plan", None)
    if plan is None or not hasattr(dev, "read_once"):
        raise ApiError(400, f"device {name}: poll once works for Modbus TCP/RTU devices")
    body = call.json()
    index = body.get("block", 0)
    blocks = [b for g in plan.groups for b in g.blocks]
    if set(body) - {"block"} or not isinstance(index, int) or isinstance(index, bool):
        raise ApiError(400, 'body must be {"block": <index from GET /api/devices/{name}>}')
    if not 0 <= index < len(blocks):
        raise ApiError(400, f"block must be 0 to {len(blocks) - 1}")
    block = blocks[index]
    _log.info("api: poll once %s block %d by %s", name, index, call.by)
    t0 = time.perf_counter()
    try:
        function, pdu = await asyncio.wait_for(dev.read_once(block), POLL_TIMEOUT)
    except Exception as exc:  # timeout, offline, closed line: the device's problem, said so
        raise ApiError(504 if isinstance(exc, TimeoutError) else 502,
                       f"device {name}: {type(exc).__name__}: {str(exc)[:200]}") from None  # fmt: skip
    rtt = time.perf_counter() - t0
    out: dict[str, Any] = {"device": name, "block": views.blocks(rt, name)[index],
                           "round_trip_s": rtt, "function": function}  # fmt: skip
    if function == block.function | 0x80:
        out["exception_code"] = pdu[0] if pdu else None
        return Response.json(502, {**out, "error": f"device answered exception {out['exception_code']}",
                                   "status": 502})  # fmt: skip
    if function != block.function or len(pdu) != block.byte_count + 1:
        raise ApiError(502, f"device {name}: unexpected answer (function {function})")
    data = pdu[1:]
    values = np.empty(len(block.point_ids), np.float64)
    if block.decoder is not None:
        out["registers"] = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        block.decoder.decode(data, values)  # type: ignore[attr-defined]
    else:
        bits = np.empty(block.count, np.float64)
        modbus.unpack_bits(data, block.count, bits)
        out["bits"] = [int(b) for b in bits]
        values = bits[block.bit_index]
    out["values"] = {n: views._num(v) for n, v in zip(block.names, values.tolist(), strict=True)}
    return _ok(out)


async def login(call: Call) -> Response:
    body = call.json()
    user, password = body.get("user"), body.get("password")
    if (
        not isinstance(user, str)
        or not isinstance(password, str)
        or set(body) != {"user", "password"}
    ):
        raise ApiError(400, 'body must be {"user": "...", "password": "..."}')
    api = call.api
    wait = api.auth.locked(user)
    if wait:
        api.refuse(call.req, _LOGIN, "locked", None)
        raise ApiError(429, f"too many wrong passwords for {user[:64]!r}; try again later",
                       [("Retry-After", str(max(1, round(wait))))])  # fmt: skip
    if not await api.auth.check(user, password):
        api.refuse(call.req, _LOGIN, "bad_credentials", None)
        raise ApiError(401, "wrong user or password")
    token, lifetime = api.auth.login(user)
    role = api.auth.file.users()[user]["role"]
    _log.info("api: %s logged in from %s", user, call.req.peer)
    return _ok({"token": token, "expires_in_s": lifetime, "user": user, "role": role})


async def logout(call: Call) -> Response:
    api = call.api
    api.auth.logout(call.req.headers.get("authorization", ""))
    return _ok({"ok": True})


def _r(method: str, path: str, handler: Any, operator: bool = False, public: bool = False) -> Route:
    pattern = re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", re.escape(path).replace(r"\{", "{")
                                .replace(r"\}", "}")))  # fmt: skip
    return Route(method, pattern, path, handler, operator, public)


_LOGIN = _r("POST", "/api/login", login, public=True)

ROUTES = [
    _r("GET", "/api/openapi.json", openapi),
    _r("GET", "/api/whoami", whoami),
    _LOGIN,
    _r("POST", "/api/logout", logout, public=True),
    _r("GET", "/api/devices", devices),
    _r("GET", "/api/devices/{name}", device),
    _r("POST", "/api/devices/{name}/poll", poll_once, operator=True),
    _r("GET", "/api/points", points),
    _r("GET", "/api/points/{name}", point),
    _r("POST", "/api/points/{name}/write", write, operator=True),
    _r("GET", "/api/alarms", alarms),
    _r("POST", "/api/alarms/{rule}/ack", ack, operator=True),
    _r("GET", "/api/rules", rules),
    _r("GET", "/api/rules/{name}", rule),
    _r("POST", "/api/rules/{name}/enable", enable, operator=True),
    _r("POST", "/api/rules/{name}/disable", disable, operator=True),
    _r("POST", "/api/rules/reload", reload_rules, operator=True),
    _r("POST", "/api/config/validate", validate_config, operator=True),
    _r("GET", "/api/models", models),
    _r("GET", "/api/uplink", uplink),
    _r("GET", "/api/events", stream),
]
