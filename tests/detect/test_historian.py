"""DeviceMonitor on telemetry as a real plant historian sends it: sensors missing from some
batches."""

from __future__ import annotations

import numpy as np

from plantcrew.detect import DeviceMonitor
from tests.detect.helpers import NOMINAL, batch


def values(rng: np.random.Generator, shift: dict[str, float] | None = None) -> dict[str, float]:
    out = {s: mu + sd * rng.standard_normal() for s, (mu, sd) in NOMINAL.items()}
    for s, k in (shift or {}).items():
        out[s] += k * NOMINAL[s][1]
    return out


def calibrated(seed: int) -> tuple[DeviceMonitor, np.random.Generator]:
    m = DeviceMonitor("pump1")
    rng = np.random.default_rng(seed)
    for i in range(500):
        m.update(batch(float(i), values(rng)))
    assert m.calibrated
    return m, rng


def test_a_sensor_missing_from_batches_is_not_stuck():
    """A sensor the historian leaves out of a stretch of batches keeps its last value; that
    is no evidence it is stuck, so no episode (incident) opens for the gap."""
    m, rng = calibrated(seed=11)
    verdicts = []
    for i in range(500, 2500):
        v = values(rng)
        if (i // 100) % 2:  # pressure absent from every other stretch of 100 batches
            del v["pressure"]
        verdicts.append(m.update(batch(float(i), v)))
    assert [v.event for v in verdicts if v.event] == []
    assert not any(v.flag for v in verdicts)
    assert all(0.0 <= v.score < 0.5 for v in verdicts)
