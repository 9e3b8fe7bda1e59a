"""Every driver folder ships its README.md and a sample.yaml that documents its options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from gateway.config import DeviceConfig, PointConfig

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


def test_modbus_tcp_sample_documents_every_option() -> None:
    sample = yaml.safe_load((DRIVERS / "modbus_tcp" / "sample.yaml").read_text())
    device = sample["devices"][0]
    assert {f.name for f in dataclasses.fields(DeviceConfig)} <= set(device)
    assert {f.name for f in dataclasses.fields(PointConfig)} <= set(device["points"][0])
