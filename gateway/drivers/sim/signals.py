"""Signal models of the simulated machines: deterministic functions of time and a seeded RNG.

Every model is advanced with :meth:`SignalModel.update` ``(t)`` (seconds, any origin; the first
call sets the model's time zero), exposes its current engineering values with
:meth:`SignalModel.values` and accepts writes from a Modbus client with
:meth:`SignalModel.write`. Nothing reads the clock itself, so tests drive the models with an
injected time and get the same trajectory every run. Measurement noise is added to what the
models report, never to their internal state, so the physics stays smooth.
"""

from __future__ import annotations

import math
import random
from typing import Protocol


class SignalModel(Protocol):
    """What the factory needs from a simulated machine."""

    def update(self, t: float) -> None: ...
    def values(self) -> dict[str, float]: ...
    def write(self, name: str, value: float) -> None: ...


def first_order(x: float, target: float, dt: float, tau: float) -> float:
    """One exact step of a first-order lag ``tau * dx/dt = target - x`` over ``dt`` seconds."""
    return target + (x - target) * math.exp(-dt / tau)


class _Clocked:
    """Tracks time zero and the step since the previous update."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.t0: float | None = None
        self.t = 0.0  # seconds since time zero

    def _advance(self, t: float) -> float:
        if self.t0 is None:
            self.t0 = t
        elapsed = t - self.t0
        dt = max(0.0, elapsed - self.t)
        self.t = max(self.t, elapsed)
        return dt

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)


class PressModel(_Clocked):
    """A hydraulic press with a heated platen.

    While ``run`` is on the platen heats towards 95 degC (tau 29 s: 68 -> 80 degC in ~17 s);
    while off it cools towards 40 degC (tau 25 s: 82 -> 65 degC in ~13 s). Pressure and
    vibration follow the run state, the parts counter counts one part per ``cycle`` seconds.
    """

    HOT, COLD = 95.0, 40.0
    TAU_HEAT, TAU_COOL = 29.0, 25.0

    def __init__(self, seed: int = 1, temp: float = 68.0, run: bool = True, cycle: float = 2.0):
        super().__init__(seed)
        self.temp = temp
        self.run = run
        self.cycle = cycle
        self.pressure = 150.0 if run else 2.0
        self.vib_level = 2.5 if run else 0.3
        self.parts = 0.0

    def update(self, t: float) -> None:
        dt = self._advance(t)
        if dt <= 0.0:
            return
        target = self.HOT if self.run else self.COLD
        self.temp = first_order(self.temp, target, dt, self.TAU_HEAT if self.run else self.TAU_COOL)
        self.pressure = first_order(self.pressure, 150.0 if self.run else 2.0, dt, 1.0)
        self.vib_level = first_order(self.vib_level, 2.5 if self.run else 0.3, dt, 0.5)
        if self.run:
            self.parts += dt / self.cycle

    def values(self) -> dict[str, float]:
        return {
            "temp": self.temp + self.noise(0.05),
            "pressure": max(0.0, self.pressure + self.noise(0.5)),
            "vibration": max(0.0, self.vib_level + self.noise(0.15 if self.run else 0.03)),
            "parts": float(int(self.parts)),
            "run": 1.0 if self.run else 0.0,
        }

    def write(self, name: str, value: float) -> None:
        if name != "run":
            raise KeyError(f"press: {name!r} is not writable")
        self.run = bool(value)


class PumpModel(_Clocked):
    """A centrifugal pump: flow follows the setpoint (first order, tau 2 s), pressure follows
    the system curve ``1 + 0.02 * flow**2`` bar."""

    def __init__(self, seed: int = 2, setpoint: float = 12.5) -> None:
        super().__init__(seed)
        self.setpoint = setpoint
        self.flow = 0.0

    def update(self, t: float) -> None:
        dt = self._advance(t)
        if dt > 0.0:
            self.flow = first_order(self.flow, self.setpoint, dt, 2.0)

    def values(self) -> dict[str, float]:
        flow = max(0.0, self.flow + self.noise(0.05))
        return {
            "flow": flow,
            "pressure": 1.0 + 0.02 * flow * flow + self.noise(0.02),
            "setpoint": self.setpoint,
        }

    def write(self, name: str, value: float) -> None:
        if name != "setpoint":
            raise KeyError(f"pump: {name!r} is not writable")
        self.setpoint = float(value)


class MotorModel(_Clocked):
    """An induction motor whose vibration sits near 4 mm/s (zone B of ISO 10816-3 group 1 on a
    rigid foundation), with an excursion to ``excursion_level`` mm/s for ``excursion_len``
    seconds every ``excursion_every`` seconds (first at ``excursion_at``). Current rises with
    vibration.

    The default level, 8.2 mm/s, is an overload (zone D while it lasts): the class the models of
    tools/make_models.py learn as "overload". The demo's motor (:func:`demo_factory`) has normal
    load excursions instead, to 5 mm/s: briefly above the zone B/C boundary, far below zone D,
    and in zone B as the 10 s RMS that ISO 10816 judges.

    An injectable bearing fault (``bearing_fault_at`` seconds, None: never; for
    ``bearing_fault_len`` seconds every ``bearing_fault_every`` seconds, 0: once) adds a 3.1 Hz
    swell of 1.5 mm/s and more noise while the RMS level stays below the zone C limit: a
    threshold rule misses it, the bearing_ae model does not.
    """

    BASE = 4.0  # mm/s RMS: upper zone B of ISO 10816-3 group 1, rigid foundation
    FAULT_HZ, FAULT_AMP, FAULT_NOISE = 3.1, 1.5, 0.5

    def __init__(
        self,
        seed: int = 3,
        excursion_at: float = 30.0,
        excursion_every: float = 40.0,
        excursion_len: float = 5.0,
        excursion_level: float = 8.2,
        bearing_fault_at: float | None = None,
        bearing_fault_every: float = 0.0,
        bearing_fault_len: float = math.inf,
    ) -> None:
        super().__init__(seed)
        self.excursion_at = excursion_at
        self.excursion_every = excursion_every
        self.excursion_len = excursion_len
        self.excursion_level = excursion_level
        self.bearing_fault_at = bearing_fault_at
        self.bearing_fault_every = bearing_fault_every
        self.bearing_fault_len = bearing_fault_len
        self.vib = self.BASE
        self.temp = 52.0

    def bearing_fault(self) -> bool:
        if self.bearing_fault_at is None:
            return False
        since = self.t - self.bearing_fault_at
        if since < 0.0:
            return False
        if self.bearing_fault_every > 0.0:
            since %= self.bearing_fault_every
        return since < self.bearing_fault_len

    def in_excursion(self) -> bool:
        since = self.t - self.excursion_at
        return since >= 0.0 and since % self.excursion_every < self.excursion_len

    def update(self, t: float) -> None:
        dt = self._advance(t)
        if dt <= 0.0:
            return
        target = self.excursion_level if self.in_excursion() else self.BASE
        self.vib = first_order(self.vib, target, dt, 0.3)
        self.temp = first_order(self.temp, 55.0 + 0.5 * (self.vib - self.BASE), dt, 60.0)

    def values(self) -> dict[str, float]:
        current = 12.0 + 0.4 * (self.vib - self.BASE) + self.noise(0.15)
        vib = self.vib + self.noise(0.25)
        if self.bearing_fault():
            swell = math.sin(2.0 * math.pi * self.FAULT_HZ * self.t)
            vib += self.FAULT_AMP * swell + self.noise(self.FAULT_NOISE)
        return {"current": current, "vibration": max(0.0, vib), "temp": self.temp + self.noise(0.1)}

    def write(self, name: str, value: float) -> None:
        raise KeyError(f"motor: {name!r} is not writable")


class BenchModel(_Clocked):
    """Load generator: ``n`` registers of changing data, cheap to update.

    Values are computed from time only when asked for (the factory encodes lazily, per read),
    so ticking a large bench factory costs almost nothing.
    """

    def __init__(self, names: list[str], seed: int = 0) -> None:
        super().__init__(seed)
        self.names = names
        self.phase = [self.rng.random() * 2 * math.pi for _ in names]

    def update(self, t: float) -> None:
        self._advance(t)

    def values(self) -> dict[str, float]:
        t = self.t
        return {
            n: 1000.0 + 900.0 * math.sin(0.5 * t + p)
            for n, p in zip(self.names, self.phase, strict=True)
        }

    def write(self, name: str, value: float) -> None:
        raise KeyError(f"bench: {name!r} is not writable")
