"""Thermal sensors settling to a new operating point.

A motor winding or a pumped fluid takes minutes to reach the temperature of a new operating
point (thermal time constants of 2 to 30 minutes), so for a while after the speed changes,
the device restarts or a fault ends, a temperature moves for a reason the Monitor already
knows. :class:`ThermalSettling` keeps the thermal sensors out of the score until they have
settled: at least ``settle_min_s`` after the change (a first-order lag shows its slope only
after a while), their change has stayed under ``settle_z`` spreads for ``clear_readings``
readings; or at the latest ``settle_max_s`` after the change.

Calibration can also end in the middle of such a transient (the plant was started or moved
shortly before the readings began): a thermal sensor whose smoothed change was ``settle_z``
spreads or more on any of calibration's last ``clear_readings`` readings has not settled by
the same test, so it starts settling when calibration ends (:meth:`ThermalSettling.carry`).
Its drift is then the tail of something that happened before or during calibration, not a
new anomaly; it is scored again once calm, as after any operating-point change. No
``settle_min_s`` wait applies there: the transient has already shown its slope.
"""

from __future__ import annotations

import numpy as np

from plantcrew.detect.calibration import BoolArray, FloatArray
from plantcrew.detect.config import MonitorConfig


class ThermalSettling:
    """Which of ``p`` sensors are settling; ``thermal`` ``(p,)`` marks those that can."""

    def __init__(self, thermal: BoolArray, config: MonitorConfig) -> None:
        self.thermal = np.asarray(thermal, dtype=bool)
        self.config = config
        p = len(self.thermal)
        self.mask = np.zeros(p, dtype=bool)
        self._calm_for = np.zeros(p, dtype=np.int64)
        self._earliest = np.zeros(p)
        self._latest = np.zeros(p)

    def start(self, ts: float) -> None:
        """The operating point changed at plant time ``ts``: every thermal sensor settles."""
        self._settle(self.thermal, ts + self.config.settle_min_s, ts + self.config.settle_max_s)

    def carry(self, ts: float, recent: FloatArray) -> None:
        """Calibration ended at plant time ``ts``; ``recent`` ``(m, p)`` holds the strengths
        (``|smoothed z| / spread``) of its last readings (at most ``clear_readings`` are
        read). A thermal sensor that reached ``settle_z`` on any of them has not settled:
        it settles from ``ts`` (at the latest by ``ts + settle_max_s``), without the
        ``settle_min_s`` wait."""
        cfg = self.config
        tail = np.asarray(recent, dtype=np.float64)[-cfg.clear_readings :]
        if tail.size == 0:
            return
        moving = self.thermal & np.any(tail >= cfg.settle_z, axis=0)
        self._settle(moving, ts, ts + cfg.settle_max_s)

    def _settle(self, which: BoolArray, earliest: float, latest: float) -> None:
        """Sensors ``which`` start settling: calm from now on, settled no sooner than
        ``earliest`` and no later than ``latest`` (plant seconds)."""
        self.mask = self.mask | which
        self._calm_for = np.where(which, 0, self._calm_for)
        self._earliest = np.where(which, earliest, self._earliest)
        self._latest = np.where(which, latest, self._latest)

    def shift(self, by: float) -> None:
        """The clock was reset: move the settling deadlines by ``by`` plant seconds."""
        self._earliest = self._earliest + by
        self._latest = self._latest + by

    def update(self, ts: float, strength: FloatArray) -> None:
        """Advance with each sensor's ``strength`` (``|smoothed z| / spread``) at ``ts``."""
        if not self.mask.any():
            return
        calm = strength < self.config.settle_z
        self._calm_for = np.where(calm, self._calm_for + 1, 0)
        settled = (self._calm_for >= self.config.clear_readings) & (ts >= self._earliest)
        self.mask = self.mask & ~(settled | (ts >= self._latest))
