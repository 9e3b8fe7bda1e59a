"""``gateway command GATEWAY KIND ...``: an operator's downlink command from the cloud host.

The command goes through whichever receiver holds the gateway's session: every control socket
in ``--control-dir`` is asked (:mod:`gateway.cloud.control`), the one with a live session sends
it and waits for the RESULT. An offline gateway is waited for up to ``--timeout`` (it may be
reconnecting, to this receiver or another); if it does not connect in time nothing is left
queued anywhere, so a command never runs hours later by surprise. A RESULT that does not come
in time is not resent either: ``--id`` with the printed id asks again without running it twice
(the gateway answers a repeated id with its stored outcome).

Exit codes (also in ``--help``): 0 done (``ok``), 1 the gateway refused it or it failed there,
2 bad arguments, 3 unknown gateway, 4 gateway offline or no RESULT in time, 5 no receiver
reachable (or its command limit reached).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from gateway.cloud import control
from gateway.uplink import wire

OK, REFUSED, BAD_ARGS, UNKNOWN, OFFLINE, NO_RECEIVER = 0, 1, 2, 3, 4, 5
EXIT_CODES = (
    "exit codes: 0 done; 1 refused by the gateway or failed there; 2 bad arguments; "
    "3 unknown gateway; 4 gateway offline or no RESULT within --timeout; "
    "5 no receiver reachable on --control-dir (or its command limit reached)"
)
POLL = 0.2  # seconds between asking the receivers whether an offline gateway is back
ASK_TIMEOUT = 5.0  # one control request that is not a command
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")
_BY = re.compile(r"[\w .@:/+-]{1,64}\Z")


class Fail(Exception):
    """A one-line error and the exit code it ends with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gateway command`` on the CLI's subparsers."""
    s = sub.add_parser(
        "command",
        help="send a downlink command to a gateway through the receiver that holds it",
        description="Send a command to a gateway through whichever receiver (gateway cloud) "
        "holds its connection, wait for its RESULT and print it.",
        epilog=EXIT_CODES,
    )
    s.add_argument("gateway", metavar="GATEWAY", help="the gateway's id (its allow-list name)")
    _options(s, top=True)
    kinds = s.add_subparsers(dest="kind", required=True, metavar="KIND")
    k = kinds.add_parser("write", help="write a value to a writable point")
    k.add_argument("point", help="device.point")
    k.add_argument("value", help="a number, or true/false")
    k = kinds.add_parser("ack", help="acknowledge a rule's alarm")
    k.add_argument("rule", help="the rule's name")
    k.add_argument("--by", default=None, help="who acknowledges (default: your login name)")
    kinds.add_parser("reload-rules", help="re-read the config's rules on the gateway")
    k = kinds.add_parser("update-model", help="replace a configured TFLite model")
    k.add_argument("name", help="a model name of the gateway's config")
    k.add_argument("file", help="the .tflite file")
    k.add_argument("--reference", default=None, help="its reference JSON file (self-test)")
    kinds.add_parser("ping", help="is the gateway there and answering")
    for child in dict.fromkeys(kinds.choices.values()):
        _options(child, top=False)
    s.set_defaults(fn=cmd_command)


def _options(p: argparse.ArgumentParser, top: bool) -> None:
    """Taken before or after KIND; only the top level has the defaults (a later one wins)."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument(
        "--control-dir",
        default=default("var/cloud/control"),
        help="the receivers' control sockets (gateway cloud --control-dir)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=default(10.0),
        help="seconds to wait for an offline gateway to connect and for its RESULT",
    )
    p.add_argument("--id", default=default(None),
                   help="command id (repeat one to get its outcome again)")  # fmt: skip
    p.add_argument("--json", action="store_true", default=default(False),
                   help="print the outcome as one JSON object")  # fmt: skip


def wire_command(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(wire kind, arguments) of the CLI's KIND, checked here so typos fail before sending."""
    if args.kind == "write":
        point = args.point
        if point.count(".") != 1 or not all(point.split(".")):
            raise Fail(BAD_ARGS, f"point {point!r} must be 'device.point', e.g. pump1.setpoint")
        return "write", {"point": point, "value": parse_value(args.value)}
    if args.kind == "ack":
        by = args.by if args.by is not None else _login()
        if not _BY.match(by):
            raise Fail(BAD_ARGS, f"--by {by!r}: 1 to 64 letters, digits, spaces or '_.@:/+-'")
        return "ack_alarm", {"rule": args.rule, "by": by}
    if args.kind == "reload-rules":
        return "reload_rules", {}
    if args.kind == "update-model":
        data = _read_file(args.file, "model file")
        out: dict[str, Any] = {
            "name": args.name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "data": data,
        }
        if args.reference is not None:
            out["reference"] = _read_file(args.reference, "--reference")
        if len(data) + len(out.get("reference", b"")) > wire.MAX_BODY_BYTES - 4096:
            raise Fail(BAD_ARGS, f"{args.file}: larger than a message may be "
                       f"({wire.MAX_BODY_BYTES} bytes)")  # fmt: skip
        return "update_model", out
    return "ping", {}


def parse_value(text: str) -> float | int | bool:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if not _NUMBER.match(low):
        raise Fail(BAD_ARGS, f"value {text!r} must be a number (12, -0.5, 1e3) or true/false")
    value = float(low)
    if value != value or value in (float("inf"), float("-inf")):
        raise Fail(BAD_ARGS, f"value {text!r} must be finite")
    return int(low) if re.fullmatch(r"[+-]?\d+", low) else value


def _read_file(path: str, what: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > wire.MAX_BODY_BYTES:
            raise Fail(BAD_ARGS, f"{what} {path}: {size} bytes, more than a message may carry")
        return Path(path).read_bytes()
    except OSError as exc:
        raise Fail(BAD_ARGS, f"{what} {path}: {exc.strerror or exc}") from None


def _login() -> str:
    name = os.environ.get("USER") or os.environ.get("LOGNAME") or "cloud"
    return name if _BY.match(name) else "cloud"


def _ask_all(directory: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every live receiver's answer; raises Fail(NO_RECEIVER) when none answers."""
    sockets = control.receivers(directory)
    if not sockets:
        raise Fail(
            NO_RECEIVER,
            f"no receiver's control socket in {directory} (is `gateway cloud` running with "
            f"--control-dir {directory}?)",
        )
    answers = []
    problems = []
    for path in sockets:
        try:
            answers.append(control.ask(path, request, ASK_TIMEOUT))
        except PermissionError:
            problems.append(f"{path.name}: permission denied (run as the receiver's user)")
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}: {exc}")
    if not answers:
        raise Fail(NO_RECEIVER, f"no receiver answers in {directory}: {'; '.join(problems)}")
    return answers


def send(
    directory: str, gateway: str, kind: str, args: dict[str, Any], cid: str, timeout: float
) -> dict[str, Any]:
    """Find the receiver holding ``gateway`` (waiting up to ``timeout``), send, return its
    answer ``{receiver, id, outcome, detail}``; raises :class:`Fail` otherwise."""
    deadline = time.monotonic() + timeout
    known: bool | None = None
    last_seen: tuple[float, str] | None = None
    while True:
        views = _ask_all(directory, {"op": "gateway", "gateway": gateway, "known": known is None})
        live = [v for v in views if v.get("session")]
        if live:
            best = max(live, key=lambda v: v["session"]["started"])
            remaining = max(0.1, deadline - time.monotonic())
            req = {"op": "command", "gateway": gateway, "kind": kind, "args": args, "id": cid,
                   "timeout": remaining}  # fmt: skip
            path = Path(directory) / f"{best['receiver']}{control.SUFFIX}"
            try:
                answer = control.ask(path, req, remaining + ASK_TIMEOUT)
            except (OSError, ValueError) as exc:
                raise Fail(NO_RECEIVER, f"receiver {best['receiver']}: {exc}") from None
            error = answer.get("error")
            if error is None:
                return answer
            if error == "timeout":
                raise Fail(OFFLINE, (
                    f"{gateway}: no RESULT within {timeout:g}s (via {answer['receiver']}); "
                    f"it may still run there, and is not resent: `--id {cid}` asks again "
                    "without running it twice"
                ))  # fmt: skip
            if error != "offline":  # offline: it left between the two questions; look again
                raise Fail(NO_RECEIVER, f"receiver {answer.get('receiver')}: {error}: "
                           f"{answer.get('detail', '')}")  # fmt: skip
        else:
            for v in views:
                if v.get("last_seen") and (last_seen is None or v["last_seen"] > last_seen[0]):
                    last_seen = (v["last_seen"], v["receiver"])
            if known is None:
                known = any(v.get("known") for v in views)
                if not known:
                    raise Fail(UNKNOWN, (
                        f"unknown gateway {gateway!r}: no receiver in {directory} has seen it, "
                        "has it in its allow-list or in its store (check the id)"
                    ))  # fmt: skip
        if time.monotonic() >= deadline:
            seen = (
                f"last seen {time.time() - last_seen[0]:.0f}s ago via {last_seen[1]}"
                if last_seen
                else "not seen since the receivers started"
            )
            raise Fail(OFFLINE, (
                f"{gateway} is offline: not connected to any receiver within {timeout:g}s "
                f"({seen}); the command was not sent and is not queued"
            ))  # fmt: skip
        time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


def cmd_command(args: argparse.Namespace) -> int:
    try:
        if not wire.GATEWAY_ID_RE.fullmatch(args.gateway):
            raise Fail(BAD_ARGS, f"gateway id {args.gateway!r} must be 1 to 128 letters, "
                       "digits or '_.-'")  # fmt: skip
        if not 0 < args.timeout <= control.MAX_TIMEOUT:
            raise Fail(BAD_ARGS, f"--timeout {args.timeout:g}: between 0 and "
                       f"{control.MAX_TIMEOUT:g} seconds")  # fmt: skip
        cid = args.id or uuid.uuid4().hex
        if not 0 < len(cid) <= 128:
            raise Fail(BAD_ARGS, "--id must be 1 to 128 characters")
        kind, wargs = wire_command(args)
        answer = send(args.control_dir, args.gateway, kind, wargs, cid, args.timeout)
    except Fail as exc:
        print(f"gateway command: {exc}", file=sys.stderr)
        return exc.code
    outcome, detail = str(answer.get("outcome")), str(answer.get("detail", ""))
    if args.json:
        print(json.dumps({"gateway": args.gateway, "kind": kind, "id": cid,
                          "receiver": answer.get("receiver"), "outcome": outcome,
                          "detail": detail}))  # fmt: skip
    else:
        print(f"{args.gateway} {args.kind}: {outcome}{': ' + detail if detail else ''}")
    return OK if outcome == "ok" else REFUSED


def add_fleet_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gateway fleet`` (every receiver's per-gateway status, merged)."""
    s = sub.add_parser(
        "fleet",
        help="per-gateway status merged from every receiver on --control-dir (JSON)",
        epilog="exit codes: 0 shown; 2 bad arguments; 3 --gateway unknown to every receiver; "
        "5 no receiver reachable",
    )
    s.add_argument(
        "--control-dir",
        default="var/cloud/control",
        help="the receivers' control sockets (gateway cloud --control-dir)",
    )
    s.add_argument("--gateway", default=None, help="only this gateway")
    s.set_defaults(fn=cmd_fleet)


def fleet_status(directory: str) -> dict[str, Any]:
    """``{receivers: {name: {endpoint, healthy, problems}}, gateways: {gw: status}}``: per
    gateway the entry of the receiver holding its session (else the one that saw it last), with
    ``seen_by``: every receiver that has state of it."""
    receivers: dict[str, Any] = {}
    gateways: dict[str, Any] = {}
    for answer in _ask_all(directory, {"op": "status"}):
        st = answer.get("status") or {}
        receivers[answer["receiver"]] = {
            k: st.get(k) for k in ("endpoint", "pub_endpoint", "healthy", "problems")
        }
        for gw, view in (st.get("gateways") or {}).items():
            seen_by = [*gateways.get(gw, {}).get("seen_by", []), answer["receiver"]]
            best = gateways.get(gw)
            rank = (bool(view.get("connected")), view.get("last_seen") or 0)
            if best is None or rank > (bool(best.get("connected")), best.get("last_seen") or 0):
                best = dict(view)
            gateways[gw] = {**best, "seen_by": sorted(seen_by)}
    return {
        "receivers": dict(sorted(receivers.items())),
        "gateways": dict(sorted(gateways.items())),
    }


def cmd_fleet(args: argparse.Namespace) -> int:
    from gateway.jsonsafe import dumps

    try:
        if args.gateway is not None and not wire.GATEWAY_ID_RE.fullmatch(args.gateway):
            raise Fail(BAD_ARGS, f"--gateway {args.gateway!r} is not a gateway id")
        doc = fleet_status(args.control_dir)
        if args.gateway is not None:
            if args.gateway not in doc["gateways"]:
                raise Fail(UNKNOWN, f"no receiver in {args.control_dir} has seen "
                           f"{args.gateway!r} since it started")  # fmt: skip
            doc["gateways"] = {args.gateway: doc["gateways"][args.gateway]}
    except Fail as exc:
        print(f"gateway fleet: {exc}", file=sys.stderr)
        return exc.code
    print(dumps(doc))
    return OK
