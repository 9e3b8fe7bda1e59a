"""The OpenAPI 3.1 document of the REST API, served at ``/api/openapi.json``.

Tests validate it (openapi-spec-validator), check that it lists exactly the routes the server
has, and fuzz the server from it (schemathesis).
"""

from __future__ import annotations

from typing import Any

from gateway import __version__

_OBJ: dict[str, Any] = {"type": "object"}
_ERR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "No or wrong credentials", 403: "Not allowed",
            404: "Not found", 409: "Conflict", 413: "Too large", 415: "Not JSON",
            422: "Refused (the reason is in error)", 429: "Rate limited",
            502: "The device failed", 503: "Busy or unavailable", 504: "The device timed out"}  # fmt: skip
    return {str(c): _json(_ERR, text[c]) for c in codes}


def _param(name: str, where: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema,
            "description": text}  # fmt: skip


_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,128}$"}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, schema: dict[str, Any], params: list[Any] | None = None,
         errors: tuple[int, ...] = (401,)) -> dict[str, Any]:  # fmt: skip
    return {"get": {"summary": summary, "parameters": params or [],
                    "responses": {"200": _json(schema), **_errors(*errors)}}}  # fmt: skip


def _post(summary: str, body: dict[str, Any] | None, schema: dict[str, Any],
          errors: tuple[int, ...], params: list[Any] | None = None,
          operator: bool = True) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": {"200": _json(schema), **_errors(*errors)}}  # fmt: skip
    if body is not None:
        op["requestBody"] = _body(body)
    if operator:
        op["security"] = [{"bearer": []}, {"basic": []}]
        op["description"] = "Needs a user with role operator."
    return {"post": op}


def _arr(ref: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}


def _ref(ref: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{ref}"}


_NUM = {"type": ["number", "null"]}
_STR = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "status"],
              "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}},
    "Point": {"type": "object", "required": ["name", "device", "value", "ts", "quality"],
              "properties": {"name": {"type": "string"}, "device": {"type": "string"},
                             "type": {"type": "string"}, "unit": {"type": "string"},
                             "description": {"type": "string"}, "writable": {"type": "boolean"},
                             "value": _NUM, "ts": _NUM,
                             "quality": {"enum": ["good", "uncertain", "bad"]},
                             "samples": {"type": "array", "description": "[ts, value] pairs, "
                                         "oldest first", "items": {"type": "array"}}}},
    "Device": {"type": "object", "required": ["name", "state", "online"],
               "properties": {"name": {"type": "string"}, "driver": {"type": "string"},
                              "state": {"type": "string"}, "online": {"type": "boolean"},
                              "last_error": _STR, "round_trip_s": _NUM,
                              "stalled": {"type": "boolean"}, "restarts": {"type": "integer"},
                              "points": {"type": "array", "items": {"type": "string"}},
                              "counters": _OBJ, "blocks": {"type": "array", "items": _OBJ}}},
    "Alarm": {"type": "object", "required": ["rule", "active", "acked", "state"],
              "properties": {"rule": {"type": "string"}, "active": {"type": "boolean"},
                             "since": _NUM, "severity": {"type": "string"},
                             "message": {"type": "string"}, "acked": {"type": "boolean"},
                             "acked_by": {"type": "string"}, "acked_ts": _NUM,
                             "state": {"enum": ["normal", "active_unacked", "active_acked",
                                                "cleared_unacked"]}}},
    "Rule": {"type": "object", "required": ["name", "enabled", "state"],
             "properties": {"name": {"type": "string"}, "enabled": {"type": "boolean"},
                            "state": {"enum": ["idle", "holding", "active", "cooldown",
                                               "disabled"]},
                            "last_fired": _NUM, "firings": {"type": "integer"},
                            "clears": {"type": "integer"}, "evaluations": {"type": "integer"}}},
    "Model": {"type": "object", "required": ["name", "state"],
              "properties": {"name": {"type": "string"}, "state": {"type": "string"},
                             "latency_p50_s": _NUM, "latency_p99_s": _NUM,
                             "last_output": _OBJ}},
    "Uplink": {"type": "object", "required": ["link", "queue_depth", "queue_bytes"],
               "properties": {"link": _STR, "queue_depth": {"type": "integer"},
                              "queue_bytes": {"type": "integer"}, "oldest_age_s": _NUM,
                              "dropped": _OBJ, "streams": _OBJ, "counters": _OBJ}},
    "Ok": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
}  # fmt: skip

_NAME_P = [_param("name", "path", _NAME, "Name")]
_EMPTY = {"type": "object", "additionalProperties": False}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/openapi.json": _get("This document", _OBJ),
        "/api/whoami": _get("Who the request is from (user null: anonymous on loopback)", _OBJ),
        "/api/login": _post("Log in: a session token for Authorization: Bearer",
                            {"type": "object", "required": ["user", "password"],
                             "additionalProperties": False,
                             "properties": {"user": {"type": "string"},
                                            "password": {"type": "string"}}},
                            _OBJ, (400, 401, 415, 429), operator=False),
        "/api/logout": _post("End the session of the bearer token", None, _ref("Ok"), (),
                             operator=False),
        "/api/devices": _get("Devices: state, last error, round trip, counters, read blocks",
                             _arr("Device")),
        "/api/devices/{name}": _get("One device", _ref("Device"), _NAME_P, (401, 404)),
        "/api/devices/{name}/poll": _post(
            "Read one block of a Modbus device once: raw registers and decoded values",
            {"type": "object", "additionalProperties": False,
             "properties": {"block": {"type": "integer", "minimum": 0}}},
            _OBJ, (400, 401, 403, 404, 415, 502, 504), _NAME_P),
        "/api/points": _get("Points with live value and quality", _arr("Point"), [
            _param("device", "query", {"type": "string"}, "Only this device's points"),
            _param("samples", "query", {"type": "integer", "minimum": 0, "maximum": 4096},
                   "Also the last N samples of each point")], (400, 401)),
        "/api/points/{name}": _get("One point with its last samples", _ref("Point"), [
            *_NAME_P, _param("samples", "query", {"type": "integer", "minimum": 0,
                                                  "maximum": 4096}, "Samples (default 100)")],
            (400, 401, 404)),
        "/api/points/{name}/write": _post(
            "Write a writable point (rate limited; logged with the user; an event upstream)",
            {"type": "object", "required": ["value"], "additionalProperties": False,
             "properties": {"value": {"type": ["number", "boolean"]}}},
            _ref("Ok"), (400, 401, 403, 404, 415, 429, 502), _NAME_P),
        "/api/alarms": _get("Alarms, filtered", _arr("Alarm"), [
            _param("state", "query", {"enum": ["normal", "active_unacked", "active_acked",
                                               "cleared_unacked"]}, "Alarm state"),
            _param("severity", "query", {"type": "string"}, "Severity"),
            _param("active", "query", {"enum": ["true", "false"]}, "Active or not")],
            (400, 401)),
        "/api/alarms/{rule}/ack": _post(
            "Acknowledge an alarm (as the cloud's ack_alarm; by = the user)", _EMPTY, _OBJ,
            (400, 401, 403, 404, 415), [_param("rule", "path", _NAME, "Rule name")]),
        "/api/rules": _get("Rules: state, last firing, counts", _arr("Rule")),
        "/api/rules/{name}": _get("One rule", _ref("Rule"), _NAME_P, (401, 404)),
        "/api/rules/{name}/enable": _post("Enable a rule until the config is reloaded",
                                          _EMPTY, _OBJ, (400, 401, 403, 404, 415), _NAME_P),
        "/api/rules/{name}/disable": _post("Disable a rule until the config is reloaded",
                                           _EMPTY, _OBJ, (400, 401, 403, 404, 415), _NAME_P),
        "/api/rules/reload": _post("Reload the rules from the config file, all or nothing",
                                   _EMPTY, _OBJ, (400, 401, 403, 415, 422)),
        "/api/config/validate": _post(
            "Validate a candidate config file (nothing is applied)",
            {"type": "object", "required": ["yaml"], "additionalProperties": False,
             "properties": {"yaml": {"type": "string", "maxLength": 61440}}},
            {"type": "object", "required": ["ok", "issues"],
             "properties": {"ok": {"type": "boolean"},
                            "issues": {"type": "array", "items": {"type": "string"}}}},
            (400, 401, 403, 413, 415)),
        "/api/models": _get("Models: state, latency, last output", _arr("Model")),
        "/api/uplink": _get("Uplink: link, queue depth/bytes/oldest age, drops", _ref("Uplink")),
        "/api/events": {"get": {
            "summary": "Server-Sent Events: points, alarms, devices, uplink, rules, events",
            "parameters": [
                _param("interval_ms", "query", {"type": "integer", "minimum": 200,
                                                "maximum": 10000}, "Look interval (1000)"),
                _param("access_token", "query", {"type": "string"},
                       "A session token, for EventSource (which cannot send headers)")],
            "responses": {"200": {"description": "An event stream",
                                  "content": {"text/event-stream": {"schema":
                                                                    {"type": "string"}}}},
                          **_errors(400, 401, 503)}}},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Edge gateway API",
            "version": __version__,
            "description": "Reads are open on loopback; actions need an operator (docs/api.md).",
        },  # fmt: skip
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }
