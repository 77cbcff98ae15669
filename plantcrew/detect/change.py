"""Change alarms: a fast per-sensor CUSUM that flags a step as it happens.

The Monitor's episode detector smooths (``fast_tau_s``) and debounces, so a step of one or two
noise sd (SKAB's valve closures move the flow that much) takes tens of seconds to open an
episode. A :class:`ChangeAlarm` watches each fast (non-thermal) sensor for a *step* against
its recent level instead: a two-sided CUSUM (Page 1954) of ``z = (reading - reference) /
scale``, with drift allowance ``change_k`` (noise sd; half the smallest step worth flagging
fast) and, per sensor, the limit ``h = change_limit_factor`` times the largest value the same
statistic reached over the calibration readings (the plant's normal wander, which is not
white noise), at least the white-noise limit for an in-control run length of ``1 / alpha``
readings (Siegmund's approximation). The reference follows the readings
(``change_tau_s``) while the sensor's statistic is under half its limit.

A sensor's alarm counts only while the step leads *away* from the sensor's normal level: the
Monitor's smoothed deviation lies on the step's side by at least ``change_away`` smoothed
spreads (a recovery back to normal is a change too, but not an anomaly). An alarm lasts at
most ``debounce_readings`` readings: then the reference restarts at the current reading (the
episode detector, with its debounce and hysteresis, carries a lasting fault). A change alarm
raises the reading's ``flag`` only; it never opens an episode (an incident) by itself.
"""

from __future__ import annotations

import math

import numpy as np

from plantcrew.detect.calibration import Z_LIMIT, BoolArray, FloatArray, ewma_weight
from plantcrew.detect.config import MonitorConfig


def white_limit(k: float, alpha: float) -> float:
    """The one-sided CUSUM limit ``h`` whose in-control run length is about ``1 / alpha``
    readings for white unit-variance noise and drift ``k`` > 0 (Siegmund's approximation,
    ``ARL0 = (exp(2 k b) - 2 k b - 1) / (2 k^2)`` with ``b = h + 1.166``), solved by bisection.
    """
    target = 1.0 / alpha

    def arl(h: float) -> float:
        b = 2.0 * k * (h + 1.166)
        return (math.expm1(b) - b) / (2.0 * k * k)

    lo, hi = 0.0, 1.0
    while arl(hi) < target:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if arl(mid) < target else (lo, mid)
    return hi


class ChangeAlarm:
    """Two-sided CUSUM per sensor of ``p`` (arrays ``(p,)``); see the module docstring.

    ``reference`` is the level each sensor is compared with (rated units, as the Monitor's
    baselines), ``scale`` its noise in its own units, ``limit`` its alarm limit (``inf`` for
    a sensor not watched).
    """

    def __init__(
        self, reference: FloatArray, scale: FloatArray, limit: FloatArray, config: MonitorConfig
    ) -> None:
        self.reference = np.asarray(reference, dtype=np.float64).copy()
        self.scale = np.asarray(scale, dtype=np.float64)
        self.limit = np.asarray(limit, dtype=np.float64)
        self.config = config
        p = len(self.reference)
        self.up = np.zeros(p)
        self.down = np.zeros(p)
        self.held = np.zeros(p, dtype=np.int64)

    @property
    def statistic(self) -> FloatArray:
        """The larger of the two one-sided sums per sensor (noise sd)."""
        return np.maximum(self.up, self.down)

    def update(
        self, dt: float, rated: FloatArray, gain: FloatArray, present: BoolArray | None = None
    ) -> BoolArray:
        """Fold in one reading (``rated`` = reading / ``gain``); True where a sensor's sum is
        over its limit (before the away-from-normal test, see :meth:`alarm`). Sensors not
        ``present`` in the reading (default: all are) keep their state and are not over."""
        if present is not None and not present.all():
            kept = (self.reference.copy(), self.up.copy(), self.down.copy(), self.held.copy())
            over = self.update(dt, rated, gain)
            gone = ~present
            for now, was in zip((self.reference, self.up, self.down, self.held), kept, strict=True):
                now[gone] = was[gone]
            return np.asarray(over & present, dtype=bool)
        cfg = self.config
        with np.errstate(over="ignore"):
            z = np.clip((rated - self.reference) * gain / self.scale, -Z_LIMIT, Z_LIMIT)
        self.up = np.maximum(0.0, self.up + z - cfg.change_k)
        self.down = np.maximum(0.0, self.down - z - cfg.change_k)
        stat = self.statistic
        over = stat > self.limit
        self.held = np.where(over, self.held + 1, 0)
        restart = self.held >= cfg.debounce_readings
        if restart.any():
            self.reference = np.where(restart, rated, self.reference)
            self.up = np.where(restart, 0.0, self.up)
            self.down = np.where(restart, 0.0, self.down)
            self.held = np.where(restart, 0, self.held)
        follow = (stat <= 0.5 * self.limit) & ~restart
        w = ewma_weight(dt, cfg.change_tau_s)
        self.reference = np.where(
            follow, self.reference + w * (rated - self.reference), self.reference
        )
        return np.asarray(over, dtype=bool)

    def alarm(self, over: BoolArray, strength_signed: FloatArray) -> BoolArray:
        """Sensors whose alarm counts: ``over`` and the step's side agrees with the Monitor's
        smoothed deviation (``z / spread``, signed) by at least ``change_away``."""
        side = np.where(self.up >= self.down, 1.0, -1.0)
        return np.asarray(over & (side * strength_signed >= self.config.change_away), dtype=bool)

    @classmethod
    def fit(
        cls,
        ts: FloatArray,
        rated: FloatArray,
        gain: FloatArray,
        scale: FloatArray,
        watch: BoolArray,
        config: MonitorConfig,
    ) -> ChangeAlarm:
        """Calibrate on readings ``rated`` ``(n, p)`` (reading / ``gain``) at ``ts`` ``(n,)``.

        Runs the statistic over the calibration readings with no limit (the reference starting
        at the mean of the first ``early_readings``, then following), takes each sensor's
        largest value after the first quarter (the reference settling) and sets the limit to
        ``change_limit_factor`` times it, at least :func:`white_limit`; sensors outside
        ``watch`` (thermal or constant) get ``inf``. The returned alarm starts from the mean
        of the last ``early_readings`` readings.
        """
        n, p = rated.shape
        m = max(1, min(config.early_readings, n))
        probe = cls(rated[:m].mean(axis=0), scale, np.full(p, np.inf), config)
        peak = np.zeros(p)
        for i in range(n):
            dt = float(ts[i] - ts[i - 1]) if i else 0.0
            probe.update(dt, rated[i], gain[i])
            if i >= n // 4:
                peak = np.maximum(peak, probe.statistic)
        floor = white_limit(config.change_k, config.alpha)
        limit = np.maximum(config.change_limit_factor * peak, floor)
        limit = np.where(watch, limit, np.inf)
        return cls(rated[-m:].mean(axis=0), scale, limit, config)
