"""Which readings of a device the Monitor scores, and how it makes them comparable.

- Actuator feedback (``speed_pct``, valve ``position_pct``, setpoints) follows commands; it is
  not a process variable and is never scored. A device that reports nothing else (a valve)
  is not monitored at all.
- The pump affinity laws (flow ~ n, pressure ~ n², shaft power and current ~ n³; vibration
  forces of imbalance ~ n², n = speed / rated) make a centrifugal pump's readings comparable
  across speeds: :func:`affinity_gain` is the matching power of n. Reference: the
  affinity laws of any centrifugal pump handbook (e.g. Gülich, Centrifugal Pumps, 3rd ed.,
  ch. 3).
- Thermal sensors react to the operating point with a lag of minutes; they are flagged here
  and handled separately (scored on their changes, re-baselined after a regime change).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

AFFINITY_EXPONENTS: dict[str, int] = {
    "flow_rate": 1,
    "pressure": 2,
    "current": 3,
    "vibration_1": 2,
    "vibration_2": 2,
}
"""Sensor -> power of the relative speed its reading scales with (pump affinity laws)."""


def matches(sensor: str, patterns: Iterable[str]) -> bool:
    """True when ``sensor`` matches one of the fnmatch ``patterns``."""
    return any(fnmatch.fnmatch(sensor, pat) for pat in patterns)


def affinity_gain(sensor: str, speed_pct: float | None) -> float:
    """What ``sensor`` reads at ``speed_pct`` relative to rated speed: ``(speed/100) ** k``.

    1.0 for a sensor the affinity laws do not cover, or without a speed. The Monitor compares
    a reading with ``baseline * gain`` in the sensor's own units, so a slow pump's small
    readings keep their real noise (dividing them by ``gain`` instead would magnify it).
    """
    k = AFFINITY_EXPONENTS.get(sensor)
    if k is None or speed_pct is None or speed_pct <= 0:
        return 1.0
    return float((speed_pct / 100.0) ** k)
