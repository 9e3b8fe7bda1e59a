"""Built-in simulated Modbus TCP devices (pymodbus servers) for the demo, tests and benchmarks.

See README.md in this folder for the machines and their register maps.
"""

from gateway.drivers.sim.factory import (
    SimDeviceSpec,
    SimPoint,
    bench_factory,
    demo_factory,
    device_config,
)
from gateway.drivers.sim.server import Factory, run_factory
from gateway.drivers.sim.signals import (
    BenchModel,
    MotorModel,
    PressModel,
    PumpModel,
    SignalModel,
)

__all__ = [
    "BenchModel",
    "Factory",
    "MotorModel",
    "PressModel",
    "PumpModel",
    "SignalModel",
    "SimDeviceSpec",
    "SimPoint",
    "bench_factory",
    "demo_factory",
    "device_config",
    "run_factory",
]
