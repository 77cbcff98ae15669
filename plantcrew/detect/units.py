"""Units of a device's sensors: a reading in another unit is not scored against a baseline.

A historian export can change the unit a sensor is reported in (the same pressure in ``bar``,
then in ``kPa``). Scored against the baseline calibrated in the first unit, the readings in
the second are a huge, lasting deviation: an incident that never clears. So a sensor's unit
is fixed by its first reading that names one; a later reading naming another is set aside
(:class:`UnitMismatch`, with a reason naming device, sensor, the unit expected and the unit
seen) for the caller to dead-letter, and the sensor keeps its last value meanwhile (no new
reading, as when a sensor is missing from a batch). A reading with no unit (``""``) makes no
claim and is accepted. No conversion is attempted: which units convert, and how, is for the
source to say, not for the detector to guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantcrew.messages import Reading, TelemetryBatch


@dataclass(frozen=True)
class UnitMismatch:
    """A ``reading`` whose unit is not the ``expected`` one of its sensor; ``first`` is True
    the first time this sensor is seen in this unit (a caller logs that once)."""

    reading: Reading
    expected: str
    first: bool

    @property
    def reason(self) -> str:
        """Why the reading was not scored: device, sensor, unit expected and unit seen."""
        r = self.reading
        return (
            f"device {r.device_id!r} sensor {r.sensor!r}: reading in unit {r.unit!r} at "
            f"ts {r.ts:g}, but the sensor was calibrated in {self.expected!r}; not scored"
        )


class UnitGuard:
    """The unit of each sensor of one device, fixed by its first reading that names one."""

    def __init__(self) -> None:
        self.units: dict[str, str] = {}
        """Sensor -> its unit (only sensors whose readings named one)."""
        self._seen: set[tuple[str, str]] = set()

    def check(self, batch: TelemetryBatch) -> tuple[list[Reading], tuple[UnitMismatch, ...]]:
        """Split ``batch``'s readings into those in their sensor's unit (or naming none), in
        order, and the :class:`UnitMismatch` of the others."""
        kept: list[Reading] = []
        rejected: list[UnitMismatch] = []
        for r in batch.readings:
            if not r.unit:
                kept.append(r)
                continue
            expected = self.units.setdefault(r.sensor, r.unit)
            if r.unit == expected:
                kept.append(r)
                continue
            key = (r.sensor, r.unit)
            rejected.append(UnitMismatch(r, expected, key not in self._seen))
            self._seen.add(key)
        return kept, tuple(rejected)
