"""packaging/firstboot.py against a boot folder and a root folder, validated by the real `gateway check`."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from gateway.api.auth import UserFile
from hil_tests.rig import standalone_demo_config

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("firstboot", ROOT / "packaging/firstboot.py")
assert _spec is not None and _spec.loader is not None
firstboot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(firstboot)

CHECK = [sys.executable, "-m", "gateway.cli", "check"]


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    boot, root = tmp_path / "boot", tmp_path / "root"
    (boot).mkdir()
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tlocalhost\n")
    return boot, root


def test_no_settings_file_is_a_no_op(tree: tuple[Path, Path]) -> None:
    boot, root = tree
    assert firstboot.apply(boot, root, CHECK) is False
    assert not (root / "etc/gateway").exists()


def test_insecure_endpoint_and_hostname_are_applied_once(tree: tuple[Path, Path]) -> None:
    boot, root = tree
    (boot / "gateway-settings.yaml").write_text(
        "hostname: gw-line3\ngateway_id: line3-gw\n"
        "cloud: {endpoint: 'tcp://cloud.example.com:7000', insecure: true}\n"
    )
    assert firstboot.apply(boot, root, CHECK) is True
    cfg = yaml.safe_load((root / "etc/gateway/gateway.yaml").read_text())
    assert cfg["gateway"]["id"] == "line3-gw"
    assert cfg["gateway"]["data_dir"] == "/var/lib/gateway/queue"
    assert cfg["uplink"] == {
        "queue": "/var/lib/gateway/queue/queue.db",
        "endpoints": ["tcp://cloud.example.com:7000"],
        "insecure": True,
    }
    assert (root / "etc/hostname").read_text() == "gw-line3\n"
    assert (root / "etc/hosts").read_text().splitlines()[-1] == "127.0.1.1\tgw-line3"
    assert "127.0.1.1\tlocalhost" not in (root / "etc/hosts").read_text()
    assert not (boot / "gateway-settings.yaml").exists()
    assert (boot / "gateway-settings.applied.yaml").exists()
    assert firstboot.apply(boot, root, CHECK) is False  # applied once


def test_full_config_and_key_files_are_installed_and_secrets_leave_the_boot_partition(
    tree: tuple[Path, Path],
) -> None:
    boot, root = tree
    (boot / "keys/gateway").mkdir(parents=True)
    (boot / "keys/cloud.key").write_text("cloud public key\n")
    (boot / "keys/gateway/gateway.key_secret").write_text("secret\n")
    (boot / "keys/gateway/gateway.key").write_text("public\n")
    (boot / "site.yaml").write_text(yaml.safe_dump(standalone_demo_config()))
    UserFile(boot).add("alice", "operator", None, token=True)
    (boot / "gateway-settings.yaml").write_text(
        "gateway_id: site-7\nconfig: site.yaml\nmetrics_listen: 0.0.0.0:9108\n"
        "users_file: users.json\n"
        "cloud:\n  endpoint: [tcp://a.example:7000, tcp://b.example:7000]\n"
        "  insecure: false\n  server_key: keys/cloud.key\n  gateway_keys: keys/gateway\n"
    )
    assert firstboot.apply(boot, root, CHECK)
    etc = root / "etc/gateway"
    cfg = yaml.safe_load((etc / "gateway.yaml").read_text())
    assert [d["name"] for d in cfg["devices"]] == ["press1", "pump1", "motor1"]
    assert cfg["gateway"]["metrics_listen"] == "0.0.0.0:9108"
    assert cfg["uplink"]["endpoints"] == ["tcp://a.example:7000", "tcp://b.example:7000"]
    assert cfg["uplink"]["insecure"] is False
    assert cfg["uplink"]["server_key"] == "keys/cloud.key"
    assert cfg["uplink"]["key_dir"] == "keys/gateway"
    assert (etc / "keys/cloud.key").read_text() == "cloud public key\n"
    assert (etc / "keys/gateway/gateway.key_secret").read_text() == "secret\n"
    assert oct((etc / "keys/gateway/gateway.key_secret").stat().st_mode & 0o777) == "0o640"
    assert not (boot / "keys/gateway").exists(), "private keys must not stay on the FAT partition"


def test_invalid_result_keeps_the_old_config_and_explains_on_the_boot_partition(
    tree: tuple[Path, Path],
) -> None:
    boot, root = tree
    (root / "etc/gateway").mkdir()
    (root / "etc/gateway/gateway.yaml").write_text("old: config\n")
    # No `insecure: true` and no server key: the loader refuses plaintext that was not chosen.
    (boot / "gateway-settings.yaml").write_text("cloud: {endpoint: 'tcp://c.example:7000'}\n")
    with pytest.raises(firstboot.SettingsError, match="invalid"):
        firstboot.apply(boot, root, CHECK)
    assert (root / "etc/gateway/gateway.yaml").read_text() == "old: config\n"
    assert (boot / "gateway-settings.yaml").exists()
    err = (boot / "gateway-settings.error.txt").read_text()
    assert "gateway.yaml" in err and "insecure" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hostnme: x\n", "unknown key(s) ['hostnme']"),
        ("hostname: 'bad name'\n", "hostname 'bad name'"),
        ("cloud: {endpoint: x, secure: true}\n", "cloud: unknown key(s) ['secure']"),
        ("cloud: [1]\n", "cloud: expected a mapping"),
        ("config: missing.yaml\n", "missing.yaml does not exist"),
        ("cloud: {server_key: nope.key, insecure: false}\n", "nope.key does not exist"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_settings_are_reported(tree: tuple[Path, Path], text: str, message: str) -> None:
    boot, root = tree
    (boot / "gateway-settings.yaml").write_text(text)
    assert firstboot.main(["--boot", str(boot), "--root", str(root), "--check-cmd", "true"]) == 1
    assert message in (boot / "gateway-settings.error.txt").read_text()


def test_read_only_etc_keeps_the_hostname_for_this_boot_only(tree: tuple[Path, Path]) -> None:
    boot, root = tree
    (root / "etc/gateway").mkdir()
    (root / "etc/hostname").mkdir()  # writing it fails like a read-only root would
    (boot / "gateway-settings.yaml").write_text(
        "hostname: ro-gw\ncloud: {endpoint: 'tcp://c.example:7000', insecure: true}\n"
    )
    assert firstboot.apply(boot, root, CHECK)
    assert (root / "etc/gateway/gateway.yaml").exists()


def test_files_the_config_names_travel_with_it(tree: tuple[Path, Path]) -> None:
    """A DBC, a model and its reference named relative to the site config arrive beside it."""
    boot, root = tree
    examples = ROOT / "examples"
    (boot / "site/models").mkdir(parents=True)
    shutil.copy(examples / "truck.dbc", boot / "site/truck.dbc")
    for f in ("bearing_ae.tflite", "bearing_ae.ref.json"):
        shutil.copy(examples / "models" / f, boot / "site/models" / f)
    cfg = yaml.safe_load((examples / "demo.yaml").read_text())
    cfg["models"] = cfg["models"][:1]
    cfg.pop("rule_files")
    cfg["devices"].append(
        {"name": "truck", "driver": "can",
         "can": {"interface": "socketcan", "channel": "vcan0", "dbc": "truck.dbc"},
         "points": [{"name": "rpm", "signal": "EEC1.EngineSpeed"}]}
    )  # fmt: skip
    (boot / "site/site.yaml").write_text(yaml.safe_dump(cfg))
    (boot / "gateway-settings.yaml").write_text("config: site/site.yaml\ncloud: {insecure: true}\n")
    assert firstboot.apply(boot, root, CHECK)
    etc = root / "etc/gateway"
    assert (etc / "truck.dbc").read_bytes() == (examples / "truck.dbc").read_bytes()
    model = (examples / "models/bearing_ae.tflite").read_bytes()
    assert (etc / "models/bearing_ae.tflite").read_bytes() == model
    assert (etc / "models/bearing_ae.ref.json").is_file()


def test_a_config_naming_files_outside_its_folder_is_refused(tree: tuple[Path, Path]) -> None:
    boot, root = tree
    (boot / "site").mkdir()
    (boot / "x.dbc").write_text('VERSION ""\n')
    cfg = {
        "devices": [{"name": "t", "driver": "can", "can": {"channel": "vcan0", "dbc": "../x.dbc"}}]
    }
    (boot / "site/site.yaml").write_text(yaml.safe_dump(cfg))
    (boot / "gateway-settings.yaml").write_text("config: site/site.yaml\n")
    with pytest.raises(firstboot.SettingsError, match="keep the files it uses in its folder"):
        firstboot.apply(boot, root, CHECK)
    assert not (root / "etc/gateway/gateway.yaml").exists()


def test_a_network_listener_without_api_users_is_refused_with_the_fix(
    tree: tuple[Path, Path],
) -> None:
    boot, root = tree
    (boot / "gateway-settings.yaml").write_text(
        "gateway_id: site-8\nmetrics_listen: 0.0.0.0:9108\n"
        "cloud: {endpoint: 'tcp://cloud.example.com:7000', insecure: true}\n"
    )
    with pytest.raises(firstboot.SettingsError, match="users_file"):
        firstboot.apply(boot, root, CHECK)
    assert "gateway users add" in (boot / "gateway-settings.error.txt").read_text()
    assert not (root / "etc/gateway/gateway.yaml").exists()
    UserFile(boot).add("alice", "read", None, token=True)
    settings = (boot / "gateway-settings.yaml").read_text() + "users_file: users.json\n"
    (boot / "gateway-settings.yaml").write_text(settings)
    assert firstboot.apply(boot, root, CHECK)
    assert "alice" in (root / "var/lib/gateway/queue/users.json").read_text()
    assert not (boot / "users.json").exists()
