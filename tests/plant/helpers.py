"""Helpers for the plant tests: run a plant and collect readings, robust statistics."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from plantcrew.plant import FaultSpec, SimulatedPlant, default_plant

PUMP_SENSORS = (
    "flow_rate",
    "pressure",
    "vibration_1",
    "vibration_2",
    "current",
    "voltage",
    "motor_temperature",
    "fluid_temperature",
    "speed_pct",
)
NOISE_SD = {
    "flow_rate": 0.5,
    "pressure": 0.01,
    "vibration_1": 0.003,
    "vibration_2": 0.003,
    "current": 0.02,
    "voltage": 2.0,
    "motor_temperature": 0.1,
    "fluid_temperature": 0.05,
    "speed_pct": 0.05,
    "position_pct": 0.1,
}


def make_plant(faults: Sequence[FaultSpec] = (), seed: int = 7) -> SimulatedPlant:
    return SimulatedPlant(default_plant(), list(faults), seed=seed)


Series = dict[str, dict[str, list[tuple[float, float]]]]


def record(plant: SimulatedPlant, seconds: float) -> Series:
    """Step ``seconds`` and return device -> sensor -> [(ts, value)]."""
    out: Series = {}
    for batch in plant.run(seconds):
        dev = out.setdefault(batch.device_id, {})
        for r in batch.readings:
            dev.setdefault(r.sensor, []).append((r.ts, r.value))
    return out


def values(series: list[tuple[float, float]], t0: float, t1: float) -> list[float]:
    """Values with t0 < ts <= t1."""
    return [v for ts, v in series if t0 < ts <= t1]


def robust_z(window: Sequence[float], baseline: Sequence[float], floor_sd: float) -> float:
    """Robust z of the window's median against the baseline's median and MAD
    (sd = 1.4826 MAD, never below ``floor_sd``)."""
    med = statistics.median(baseline)
    mad = statistics.median(abs(v - med) for v in baseline)
    sd = max(1.4826 * mad, floor_sd)
    return (statistics.median(window) - med) / sd
