"""Apply ``gateway-settings.yaml`` from the boot partition: hostname, gateway id, cloud endpoint, keys.

A flashed card is personalised on a PC by dropping one file on its FAT boot partition (the only
partition every OS can write). At boot, ``gateway-firstboot.service`` runs this script before
``gateway.service``; it writes ``/etc/gateway/gateway.yaml`` (on the persistent data partition in
the image), copies key files and the files the config names (DBCs, models, rule packs) next to it, validates the result with ``gateway check`` and renames the
settings file to ``gateway-settings.applied.yaml`` so it is not applied twice. Private key files are
removed from the boot partition once copied. A file that does not validate is left in place, the old
config keeps running, and the reason is written to ``gateway-settings.error.txt`` beside it, where
the person holding the card will look.

See images/README.md for the file format (``images/debian-rpi/gateway-settings.example.yaml``).
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

SETTINGS = "gateway-settings.yaml"
KEYS = {"hostname", "gateway_id", "cloud", "config", "metrics_listen", "users_file"}
CLOUD_KEYS = {"endpoint", "insecure", "server_key", "gateway_keys"}
QUEUE_DIR = "/var/lib/gateway/queue"


class SettingsError(Exception):
    """The settings file cannot be applied; the message says what to fix."""


def _check_keys(where: str, got: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(allowed)}")


def load_settings(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path.name}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path.name}: expected a mapping of settings")
    _check_keys(path.name, data, KEYS)
    cloud = data.get("cloud") or {}
    if not isinstance(cloud, dict):
        raise SettingsError(f"{path.name}: cloud: expected a mapping (endpoint, insecure, ...)")
    _check_keys(f"{path.name}: cloud", cloud, CLOUD_KEYS)
    host = data.get("hostname")
    if host is not None and (
        not isinstance(host, str)
        or not 0 < len(host) <= 63
        or not all(c.isalnum() or c == "-" for c in host)
        or host.startswith("-")
    ):
        raise SettingsError(f"{path.name}: hostname {host!r}: use 1-63 letters, digits and '-'")
    return data


def build_config(settings: dict[str, Any], boot: Path, current: Path) -> dict[str, Any]:
    """The gateway config the settings describe, starting from their ``config:`` file, else the
    current config, else a config with no devices yet."""
    if settings.get("config"):
        base_path = boot / settings["config"]
        if not base_path.is_file():
            raise SettingsError(f"{SETTINGS}: config: {base_path} does not exist")
        cfg = yaml.safe_load(base_path.read_text()) or {}
    elif current.is_file():
        cfg = yaml.safe_load(current.read_text()) or {}
    else:
        cfg = {}
    gw = cfg.setdefault("gateway", {}) or {}
    cfg["gateway"] = gw
    if settings.get("gateway_id"):
        gw["id"] = str(settings["gateway_id"])
    gw.setdefault("id", settings.get("hostname") or "gateway")
    if settings.get("metrics_listen"):
        gw["metrics_listen"] = settings["metrics_listen"]
    # The service may write only its queue directory (ReadWritePaths=): state goes there.
    gw["data_dir"] = QUEUE_DIR
    up = cfg.setdefault("uplink", {}) or {}
    cfg["uplink"] = up
    up["queue"] = f"{QUEUE_DIR}/queue.db"
    cloud = settings.get("cloud") or {}
    if cloud.get("endpoint"):
        ep = cloud["endpoint"]
        up["endpoints"] = [ep] if isinstance(ep, str) else list(ep)
    if "insecure" in cloud:
        up["insecure"] = bool(cloud["insecure"])
    if cloud.get("server_key"):
        up["server_key"] = "keys/" + Path(cloud["server_key"]).name
    if cloud.get("gateway_keys"):
        up["key_dir"] = "keys/gateway"
    return cfg


def side_files(cfg: dict[str, Any], config_dir: Path, boot: Path) -> list[tuple[Path, str]]:
    """(source, path relative to /etc/gateway) of the files the ``config:`` file names relative
    to itself (CAN DBCs, node keys, model and reference files, rule packs): they travel with it,
    as they would beside it on a PC. Absolute paths are the target's own and are left alone."""
    names: list[str] = []
    for dev in cfg.get("devices") or []:
        if isinstance(dev, dict):
            names += [(dev.get("can") or {}).get("dbc"), (dev.get("node") or {}).get("key_file")]
    for model in cfg.get("models") or []:
        if isinstance(model, dict):
            names += [model.get("file"), model.get("reference")]
    for pack in cfg.get("rule_files") or []:
        names.append(pack.get("include") if isinstance(pack, dict) else pack)
    out: list[tuple[Path, str]] = []
    for name in names:
        if not isinstance(name, str) or not name or Path(name).is_absolute():
            continue
        src = (config_dir / name).resolve()
        if ".." in Path(name).parts or not src.is_relative_to(boot.resolve()):
            raise SettingsError(
                f"{SETTINGS}: config names {name!r}: keep the files it uses in its folder "
                "(or below it) on the boot partition, or give an absolute path on the target"
            )
        if src.is_file():  # a missing one is left to `gateway check`, which names it
            out.append((src, name))
    return out


def _gateway_gid(root: Path) -> int | None:
    if str(root) != "/":
        return None  # building or testing an offline tree: ownership is set by its installer
    try:
        return grp.getgrnam("gateway").gr_gid
    except KeyError:
        return None


def _install(src: Path, dest: Path, gid: int | None, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    if gid is not None:
        os.chown(tmp, 0, gid)
    os.replace(tmp, dest)


def apply(boot: Path, root: Path, check_cmd: list[str]) -> bool:
    """Apply ``boot/gateway-settings.yaml`` to the system under ``root``; False if there is none."""
    settings_path = boot / SETTINGS
    if not settings_path.is_file():
        return False
    error_path = boot / "gateway-settings.error.txt"
    etc = root / "etc/gateway"
    try:
        settings = load_settings(settings_path)
        cfg = build_config(settings, boot, etc / "gateway.yaml")
        gid = _gateway_gid(root)
        cloud = settings.get("cloud") or {}
        with tempfile.TemporaryDirectory(prefix="gwfirstboot") as tmp:
            stage = Path(tmp)
            staged = stage / "gateway.yaml"
            staged.write_text(
                "# Written by gateway-firstboot from the boot partition's gateway-settings.yaml.\n"
                + yaml.safe_dump(cfg, sort_keys=False)
            )
            copied: list[tuple[Path, str]] = []
            if cloud.get("server_key"):
                src = boot / cloud["server_key"]
                if not src.is_file():
                    raise SettingsError(f"{SETTINGS}: cloud.server_key: {src} does not exist")
                copied.append((src, "keys/" + src.name))
            if cloud.get("gateway_keys"):
                kdir = boot / cloud["gateway_keys"]
                if not kdir.is_dir():
                    raise SettingsError(f"{SETTINGS}: cloud.gateway_keys: {kdir} is not a folder")
                copied += [(f, "keys/gateway/" + f.name) for f in sorted(kdir.iterdir())]
            if settings.get("config"):
                copied += side_files(cfg, (boot / settings["config"]).parent, boot)
            for src, rel in copied:  # staged beside the config so `gateway check` sees them
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, stage / rel)
            res = subprocess.run(
                [*check_cmd, str(staged)], capture_output=True, text=True, timeout=120
            )
            if res.returncode != 0:
                raise SettingsError(
                    "the resulting gateway config is invalid:\n"
                    + (res.stdout + res.stderr).replace(str(staged), "gateway.yaml").strip()
                )
            users = _users_file(settings, boot, root)
            for _, rel in copied:
                _install(stage / rel, etc / rel, gid, 0o640)
            if users is not None:
                _install(users, root / QUEUE_DIR.lstrip("/") / "users.json", gid, 0o640)
            _install(staged, etc / "gateway.yaml", gid, 0o640)
        _remove_secrets(boot, cloud)
        if settings.get("users_file"):
            (boot / settings["users_file"]).unlink(missing_ok=True)
        if settings.get("hostname"):
            set_hostname(root, settings["hostname"])
    except SettingsError as exc:
        error_path.write_text(f"gateway-settings.yaml was not applied:\n{exc}\n")
        raise
    error_path.unlink(missing_ok=True)
    os.replace(settings_path, boot / "gateway-settings.applied.yaml")
    return True


def _users_file(settings: dict[str, Any], boot: Path, root: Path) -> Path | None:
    """The API users file (``gateway users add`` on a PC) named by ``users_file``; a status
    listener on the network without one would not start, so that is refused here, where the
    person holding the card reads why."""
    listen = str(settings.get("metrics_listen") or "")
    host = listen.rpartition(":")[0].strip("[]")
    local = not listen or host in ("localhost", "::1") or host.startswith("127.")
    name = settings.get("users_file")
    if not name:
        if not local and not (root / QUEUE_DIR.lstrip("/") / "users.json").is_file():
            raise SettingsError(
                f"{SETTINGS}: metrics_listen {listen} is on the network, so the REST API needs "
                "users: make a users.json with `gateway users add CONFIG NAME --role operator` "
                "(its data_dir/users.json) on a PC and name it in users_file (docs/api.md)"
            )
        return None
    src = boot / str(name)
    try:
        doc = json.loads(src.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{SETTINGS}: users_file: {src} is not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or not doc.get("users"):
        raise SettingsError(f"{SETTINGS}: users_file: {src} holds no users (make it with "
                            "`gateway users add`)")  # fmt: skip
    return src


def _remove_secrets(boot: Path, cloud: dict[str, Any]) -> None:
    """The boot partition is FAT, readable by anyone holding the card: private keys leave it."""
    if cloud.get("gateway_keys"):
        shutil.rmtree(boot / cloud["gateway_keys"], ignore_errors=True)


def set_hostname(root: Path, name: str) -> None:
    """Persistent where the root is writable; on a read-only root only for this boot."""
    try:
        (root / "etc/hostname").write_text(name + "\n")
        hosts = root / "etc/hosts"
        lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
        lines = [ln for ln in lines if not ln.startswith("127.0.1.1")] + [f"127.0.1.1\t{name}"]
        hosts.write_text("\n".join(lines) + "\n")
    except OSError as exc:
        print(f"gateway-firstboot: hostname {name} for this boot only: {exc}", file=sys.stderr)
    if str(root) == "/":
        subprocess.run(["hostname", name], check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boot", type=Path, default=Path("/boot/firmware"))
    ap.add_argument("--root", type=Path, default=Path("/"))
    ap.add_argument(
        "--check-cmd",
        default="/opt/gateway/bin/gateway check",
        help="command that validates a config file (its path is appended)",
    )
    args = ap.parse_args(argv)
    try:
        applied = apply(args.boot, args.root, args.check_cmd.split())
    except SettingsError as exc:
        print(f"gateway-firstboot: {exc}", file=sys.stderr)
        return 1
    print(
        "gateway-firstboot: "
        + (f"applied {args.boot / SETTINGS}" if applied else "no settings file, nothing to do")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
