"""Physics rules for the diagnosis: soft conditions on an anomaly's deviations.

A condition is written ``SENSOR DIRECTION [AMOUNT[%]] [z>=N]``, e.g. ``flow_rate down``,
``flow_rate down 10%``, ``fluid_temperature up 1.0``, ``pressure up z>=3``,
``vibration_* up 30%``, ``flow_rate changed``, ``flow_rate steady``:

- ``SENSOR`` is a sensor name or an fnmatch pattern (``vibration_*``: the strongest match
  counts for up/down/changed, all of them must hold still for steady).
- ``DIRECTION``: ``up``, ``down``, ``changed`` (either sign) or ``steady`` (not changed).
- ``AMOUNT``: the smallest change that counts, in the sensor's unit (``1.0`` = 1 °C on a
  temperature), or relative to the baseline with ``%``. Unset: the book's ``min_change`` for
  the sensor (the smallest physically meaningful change, see ``config/signatures.yaml``).
- ``z>=N``: the smallest robust z-score that counts; unset: ``clear_z`` of the book.

Each condition holds to a degree in [0, 1] (:func:`degree`): a linear ramp of ``|z|`` from
``N * noise_z / clear_z`` to ``N``, times a ramp of the change from half the amount to the
amount (for every amount that applies; a relative amount is skipped when the baseline is 0).
A condition on a sensor the anomaly does not report has no degree (None): it is left out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from plantcrew.messages import Deviation

Direction = Literal["up", "down", "changed", "steady"]
_COND = re.compile(
    r"^\s*(?P<sensor>[A-Za-z0-9_*?.\[\]-]+)\s+(?P<dir>up|down|changed|steady)"
    r"(?:\s+(?P<amount>\d+(?:\.\d+)?)(?P<pct>%)?)?"
    r"(?:\s+z>=(?P<z>\d+(?:\.\d+)?))?\s*$"
)


@dataclass(frozen=True)
class Amount:
    """A smallest meaningful change: ``value`` in the sensor's unit, or relative (``%``)."""

    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str | float) -> Amount:
        """``"0.5%"`` -> relative 0.005; ``0.1`` or ``"0.1"`` -> 0.1 in the sensor's unit."""
        s = str(text).strip()
        if s.endswith("%"):
            return cls(float(s[:-1]) / 100.0, True)
        return cls(float(s), False)


@dataclass(frozen=True)
class Condition:
    """One parsed condition (see module)."""

    text: str
    sensor: str
    direction: Direction
    amount: Amount | None
    z: float | None

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Parse ``text``; raises ValueError naming the expected form. A text is parsed once:
        the diagnosis asks for every rule's condition on every anomaly."""
        return _parse_condition(text)

    @classmethod
    def _parse(cls, text: str) -> Condition:
        m = _COND.match(text)
        if m is None:
            raise ValueError(
                f"bad condition {text!r}: expected 'SENSOR up|down|changed|steady "
                "[AMOUNT[%]] [z>=N]'"
            )
        amount = None
        if m["amount"] is not None:
            amount = Amount.parse(m["amount"] + (m["pct"] or ""))
        z = float(m["z"]) if m["z"] is not None else None
        return cls(text.strip(), m["sensor"], m["dir"], amount, z)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4096)
def _parse_condition(text: str) -> Condition:
    return Condition._parse(text)  # frozen: one parsed condition serves every caller


@dataclass(frozen=True)
class Scale:
    """The book's thresholds: ``noise_z`` (no deviation below), ``clear_z`` (a clear one),
    ``min_change`` (sensor pattern -> smallest meaningful change)."""

    noise_z: float
    clear_z: float
    min_change: Mapping[str, Amount]

    def min_change_of(self, sensor: str) -> Amount | None:
        """The first ``min_change`` entry whose pattern matches ``sensor``, or None."""
        for pattern, amount in self.min_change.items():
            if fnmatchcase(sensor, pattern):
                return amount
        return None


def ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between."""
    if hi <= lo:
        return 1.0 if x >= hi else 0.0
    return min(max((x - lo) / (hi - lo), 0.0), 1.0)


def change(d: Deviation) -> tuple[float, float | None]:
    """``(value - baseline, (value - baseline) / |baseline|)``; relative None at baseline 0."""
    delta = d.value - d.baseline
    return delta, (delta / abs(d.baseline) if abs(d.baseline) > 1e-12 else None)


def _moved(d: Deviation, cond: Condition, scale: Scale) -> float:
    """How far ``d`` has moved, in [0, 1], by its z and its physical change (no sign)."""
    if d.direction == "flat":
        return 0.0
    z_hi = cond.z if cond.z is not None else scale.clear_z
    degree = ramp(abs(d.z), z_hi * scale.noise_z / scale.clear_z, z_hi)
    delta, rel = change(d)
    for amount in (cond.amount, scale.min_change_of(d.sensor)):
        if amount is None:
            continue
        if amount.relative:
            if rel is None:
                continue
            degree *= ramp(abs(rel), amount.value / 2, amount.value)
        else:
            degree *= ramp(abs(delta), amount.value / 2, amount.value)
    return degree


def _directed(d: Deviation, cond: Condition, scale: Scale) -> float:
    moved = _moved(d, cond, scale)
    if cond.direction in ("changed", "steady"):
        return moved
    delta, _ = change(d)
    up = d.z > 0 and delta >= 0
    down = d.z < 0 and delta <= 0
    return moved if (up if cond.direction == "up" else down) else 0.0


def degree(cond: Condition, deviations: Mapping[str, Deviation], scale: Scale) -> float | None:
    """How much ``cond`` holds for ``deviations`` (sensor -> Deviation), or None (no sensor)."""
    hits = [d for s, d in deviations.items() if fnmatchcase(s, cond.sensor)]
    if not hits:
        return None
    best = max(_directed(d, cond, scale) for d in hits)
    return 1.0 - best if cond.direction == "steady" else best


def describe(d: Deviation) -> str:
    """``flow_rate down 0.563 L/min (-1.8 %, z -1.5; 31.4 vs 32)``: one deviation in words."""
    if d.direction == "flat":
        return f"{d.sensor} stuck at {d.value:g}{' ' + d.unit if d.unit else ''}"
    delta, rel = change(d)
    unit = f" {d.unit}" if d.unit else ""
    way = "up" if delta > 0 else "down" if delta < 0 else "unchanged"
    pct = f"{rel * 100:+.1f} %, " if rel is not None else ""
    return (
        f"{d.sensor} {way} {abs(delta):.3g}{unit} ({pct}z {d.z:+.1f}; "
        f"{d.value:.4g} vs baseline {d.baseline:.4g})"
    )
