"""The demo's scratch folder and the copy of the config that points into it.

``gateway demo --config X`` used to wipe X's ``data_dir`` and regenerate its keys: with the
packaged config that is a real gateway's durable queue. Now the demo never writes outside one
folder: a fresh temporary one, or ``--workdir``, which must be new, empty or a previous demo
run's (recognised by its marker file and nothing but the demo's own entries in it). The gateway
runs on a copy of X whose state, keys and ports all point into that folder and at the demo's own
simulator, so nothing in X and nothing X's devices are can be touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from gateway.demo.ports import HOST, OPCUA_DEVICE, SIM_DEVICES, DemoPorts

MARKER = ".gateway-demo"
MARKER_TEXT = "A scratch folder of `gateway demo`: everything in it is rebuilt on each run.\n"
CONFIG_NAME = "demo.yaml"
# Everything the demo puts into its folder; a folder holding anything else is not the demo's.
OWN_ENTRIES = frozenset({MARKER, CONFIG_NAME, "data", "keys", "allowed", "logs", "cloud"})


class DemoSetupError(Exception):
    """The demo refuses to start: the message says what, where and what to do."""


def prepare_workdir(requested: str | None) -> Path:
    """A clean scratch folder: a new temporary one, or ``requested`` after it passed the checks.

    A previous demo run's folder is emptied (only the demo's own entries are in it, checked
    before anything is removed); anything else that is not empty is refused untouched.
    """
    if requested is None:
        work = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
        (work / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
        return work
    work = Path(requested).expanduser()
    if work.is_symlink():
        raise DemoSetupError(
            f"--workdir {requested}: is a symbolic link; give the folder itself (or a new one)"
        )
    if work.exists() and not work.is_dir():
        raise DemoSetupError(f"--workdir {requested}: is not a folder; give a new or empty one")
    if work.is_dir():
        entries = sorted(os.listdir(work))
        if entries and MARKER not in entries:
            raise DemoSetupError(
                f"--workdir {requested}: holds files that are not from a demo run "
                f"({_sample(entries)}); the demo only uses a new or empty folder, or one it "
                "made before. Nothing was changed."
            )
        foreign = [e for e in entries if e not in OWN_ENTRIES]
        linked = [e for e in entries if (work / e).is_symlink()]
        if foreign or linked:
            raise DemoSetupError(
                f"--workdir {requested}: was a demo's folder but now also holds "
                f"{_sample(foreign + linked)}, which the demo did not make; move them away or "
                "give another folder. Nothing was changed."
            )
        for entry in entries:
            path = work / entry
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    else:
        try:
            work.mkdir(parents=True)
        except OSError as exc:
            raise DemoSetupError(f"--workdir {requested}: cannot create it: {exc}") from None
    (work / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
    return work


def _sample(names: list[str]) -> str:
    shown = ", ".join(names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def scratch_config(
    config_path: Path, work: Path, ports: DemoPorts, text: str | None = None
) -> Path:
    """Write the demo's copy of ``config_path`` into ``work`` and return its path.

    The copy keeps the rules, rule packs and models (their paths made absolute, since the copy
    lives elsewhere) and replaces everything that reaches outside: the data dir, queue and keys
    go into ``work``, every device is the demo simulator's device of that name on loopback (the
    OPC UA machine ``mould1`` included: its endpoint becomes the demo's), the
    uplink and status endpoints are the demo's ports. A device the simulator does not have is
    refused: the demo must not poll, let alone write to, a real machine. ``text`` is the
    config's content when it was read already.
    """
    if text is None:
        text = config_path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise DemoSetupError(f"{config_path}: not a gateway config (a YAML mapping)")
    base = Path(os.path.abspath(config_path)).parent
    _absolute_paths(raw, base)
    gw = raw.setdefault("gateway", {})
    gw["data_dir"] = str(work / "data")
    gw["metrics_listen"] = f"{HOST}:{ports.metrics}"
    foreign = []
    for dev in raw.get("devices") or []:
        name, driver = dev.get("name"), dev.get("driver", "modbus_tcp")
        if driver == "opcua" and name == OPCUA_DEVICE and isinstance(dev.get("opcua"), dict):
            dev["opcua"]["endpoint"] = ports.opcua_endpoint
            continue
        if driver != "modbus_tcp" or name not in SIM_DEVICES:
            foreign.append(f"{name} ({driver})")
            continue
        dev["host"] = HOST
        dev["port"] = ports.device(name)
    if foreign:
        raise DemoSetupError(
            f"{config_path}: device(s) {', '.join(foreign)} are not machines of the demo's "
            f"simulated factory ({', '.join(SIM_DEVICES)}, Modbus TCP; {OPCUA_DEVICE}, OPC UA). "
            "The demo talks only to "
            "its simulator; use `gateway run` for real devices, or give the demo a config like "
            "examples/demo.yaml."
        )
    up = raw.setdefault("uplink", {})
    up["endpoints"] = [ports.cloud_endpoint]
    up["queue"] = str(work / "data" / "queue.db")
    if not up.get("insecure"):
        up["server_key"] = str(work / "keys" / "cloud.key")
        up["key_dir"] = str(work / "keys")
    out = work / CONFIG_NAME
    header = f"# gateway demo's copy of {config_path.resolve()}: state, keys and ports point here\n"
    out.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


def _absolute_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative file references (rule files, models) resolved against the original's folder."""

    def absolute(value: object) -> object:
        if not isinstance(value, str):
            return value
        path = Path(value).expanduser()
        return value if path.is_absolute() else os.path.normpath(base / path)

    rule_files = raw.get("rule_files") or []
    for i, item in enumerate(rule_files):
        if isinstance(item, dict) and "include" in item:
            item["include"] = absolute(item["include"])
        else:
            rule_files[i] = absolute(item)
    for model in raw.get("models") or []:
        if isinstance(model, dict):
            for key in ("file", "reference"):
                if key in model:
                    model[key] = absolute(model[key])


DEMO_USER = "operator"


def demo_login(data_dir: str) -> str:
    """A fresh operator (``DEMO_USER``) in the demo's ``users.json``; returns its password.

    The page's actions (ack, write, poll once) need an operator; a new random password each
    run, printed by the demo, since the scratch folder is thrown away anyway.
    """
    from gateway.api.auth import UserFile

    password = secrets.token_urlsafe(9)
    UserFile(data_dir).add(DEMO_USER, "operator", password, token=False)
    return password
