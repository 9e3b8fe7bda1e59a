"""Every driver folder ships its README.md and a sample.yaml that documents its options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from gateway.config import (
    CanConfig,
    DeviceConfig,
    NodeConfig,
    OpcuaConfig,
    PointConfig,
    RtuConfig,
)

DRIVERS = Path(__file__).resolve().parents[1] / "gateway" / "drivers"
FOLDERS = sorted(p for p in DRIVERS.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def test_there_are_driver_folders() -> None:
    assert {"modbus_tcp", "sim"} <= {p.name for p in FOLDERS}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_folder_has_readme_and_sample(folder: Path) -> None:
    readme = folder / "README.md"
    sample = folder / "sample.yaml"
    assert readme.is_file(), f"{folder.name}: README.md is missing"
    assert readme.read_text().startswith("# "), f"{folder.name}: README.md needs a title"
    assert sample.is_file(), f"{folder.name}: sample.yaml is missing"
    assert yaml.safe_load(sample.read_text()), f"{folder.name}: sample.yaml is empty"


#: Device and point fields that belong to one driver only.
_DRIVER_SECTIONS = {"rtu": "modbus_rtu", "can": "can", "node": "node", "opcua": "opcua"}
_POINT_KEYS = {
    "address": ("modbus_tcp", "modbus_rtu"),
    "signal": ("can",),
    "channel": ("node",),
    "node": ("opcua",),
}


def test_modbus_tcp_sample_documents_every_option() -> None:
    sample = yaml.safe_load((DRIVERS / "modbus_tcp" / "sample.yaml").read_text())
    device = sample["devices"][0]
    own = set(_DRIVER_SECTIONS) | {"settings"}  # settings: a third-party driver's section
    assert {f.name for f in dataclasses.fields(DeviceConfig)} - own <= set(device)
    point_fields = {f.name for f in dataclasses.fields(PointConfig)} - {"signal", "channel", "node"}
    assert point_fields <= set(device["points"][0])


@pytest.mark.parametrize("section", ["rtu", "can", "node", "opcua"])
def test_driver_samples_document_their_section(section: str) -> None:
    driver = _DRIVER_SECTIONS[section]
    folder = DRIVERS / driver
    if not folder.exists():
        pytest.skip(f"{driver} not present")
    device = yaml.safe_load((folder / "sample.yaml").read_text())["devices"][0]
    cls = {"rtu": RtuConfig, "can": CanConfig, "node": NodeConfig, "opcua": OpcuaConfig}[section]
    assert device["driver"] == driver
    assert {f.name for f in dataclasses.fields(cls)} <= set(device[section])
    key = next(k for k, drivers in _POINT_KEYS.items() if driver in drivers)
    assert key in device["points"][0]
