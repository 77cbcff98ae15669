"""Synthetic pump telemetry for detector tests: seeded noise, optional faults."""

from __future__ import annotations

import numpy as np

from plantcrew.messages import Reading, TelemetryBatch

NOMINAL = {
    "flow_rate": (120.0, 0.6),
    "pressure": (3.0, 0.05),
    "vibration_1": (0.20, 0.004),
    "vibration_2": (0.25, 0.004),
    "current": (2.2, 0.05),
    "voltage": (230.0, 1.0),
    "motor_temperature": (70.0, 0.1),
    "fluid_temperature": (25.0, 0.05),
}


def batch(
    t: float,
    values: dict[str, float],
    device: str = "pump1",
    row: int | None = None,
    units: dict[str, str] | None = None,
):
    """One TelemetryBatch of ``values`` at plant time ``t`` (``units``: sensor -> unit)."""
    unit = units or {}
    return TelemetryBatch(
        device_id=device,
        readings=[
            Reading(device_id=device, sensor=s, value=v, unit=unit.get(s, ""), ts=t)
            for s, v in values.items()
        ],
        row=row,
    )


def stream(
    n: int,
    *,
    seed: int = 0,
    shift: dict[str, float] | None = None,
    start: int | None = None,
    end: int | None = None,
    speed: float | None = None,
):
    """``n`` readings at 1 Hz; ``shift`` (sensor -> offset in sigmas) applies on [start, end)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        values = {s: mu + sd * rng.standard_normal() for s, (mu, sd) in NOMINAL.items()}
        if shift and start is not None and start <= i < (end if end is not None else n):
            for s, k in shift.items():
                values[s] += k * NOMINAL[s][1]
        if speed is not None:
            values["speed_pct"] = speed
        out.append(batch(float(i), values, row=i))
    return out
