"""Shared helpers of the inference tests: the demo's model configs, recordings of the motor."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from uplink_support import modbus_demo

from gateway.config import GatewayConfig, ModelConfig
from gateway.drivers.sim import MotorModel

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.yaml"
MODELS = ROOT / "examples" / "models"


def demo_config() -> GatewayConfig:
    return modbus_demo()


def demo_model(name: str, **changes: object) -> ModelConfig:
    model = next(m for m in demo_config().models if m.name == name)
    return dataclasses.replace(model, **changes)  # type: ignore[arg-type]


def motor_recording(
    seconds: float, fault_at: float | None = None, seed: int = 3, t0: float = 1_700_000_000.0
) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (polled every ~100 ms with jitter) and motor1.vibration values."""
    motor = MotorModel(seed=seed, excursion_at=1e9, bearing_fault_at=fault_at)
    rng = np.random.default_rng(seed)
    ts, vs, t = [], [], 0.0
    while t < seconds:
        motor.update(t)
        ts.append(t0 + t)
        vs.append(motor.values()["vibration"])
        t += 0.1 + float(rng.uniform(-0.03, 0.03))
    return np.array(ts), np.array(vs)
