"""One anomaly episode of a device: its early summary, its members, and when it is over.

- Summary: from its first flagged reading until it is reported (``summary_s`` later), each
  sensor's strongest smoothed deviation (by strength, ``|z| / spread``) is kept with the
  baseline it was measured against; this early pattern is what the diagnosis sees.
- Members: the sensors that carried the episode when it was reported: strength at least the
  single-sensor alarm level, or half the strongest sensor's (a shift shared by several
  sensors), plus any stuck sensor.
- Recovery (:meth:`Episode.recovered`): the scored sensors are back under the clear level,
  or every member has receded to ``recover_fraction`` of its peak ``|z|`` while no sensor
  lies more than ``recover_offset_sd`` noise sd off its baseline. The second way ends an
  episode after which the plant settles a little off its old operating point, as real
  plants do (SKAB's testbed by up to a few noise sd); a fault that only partly recedes, or
  stays large, holds it open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plantcrew.detect.calibration import BoolArray, FloatArray
from plantcrew.detect.config import MonitorConfig


@dataclass
class Episode:
    """An open (or pending) episode over ``p`` sensors; arrays are ``(p,)``."""

    start_ts: float
    report_at: float
    z: FloatArray
    strength: FloatArray
    baseline: FloatArray
    stuck: BoolArray
    reported: bool = False
    peak_score: float = 0.0
    calm_readings: int = 0
    members: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    peak_z: FloatArray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def begin(cls, ts: float, summary_s: float, baseline: FloatArray) -> Episode:
        """An episode whose first flagged reading is at ``ts``, reported ``summary_s`` later."""
        p = len(baseline)
        return cls(
            start_ts=ts,
            report_at=ts + summary_s,
            z=np.zeros(p),
            strength=np.zeros(p),
            baseline=baseline.copy(),
            stuck=np.zeros(p, dtype=bool),
        )

    def observe(
        self,
        score: float,
        z: FloatArray,
        strength: FloatArray,
        baseline: FloatArray,
        scored: BoolArray,
        stuck: BoolArray,
    ) -> None:
        """Fold one reading into the early summary (before the episode is reported)."""
        stronger = (scored | stuck) & (strength > self.strength)
        self.z = np.where(stronger, z, self.z)
        self.baseline = np.where(stronger, baseline, self.baseline)
        self.strength = np.where(stronger, strength, self.strength)
        self.stuck = self.stuck | stuck
        self.peak_score = max(self.peak_score, score)

    def due(self, ts: float) -> bool:
        """True when the early summary is complete at plant time ``ts``."""
        return ts >= self.report_at - 1e-9

    def report(self, single_level: float) -> BoolArray:
        """Close the summary: fix the members (see module); returns the sensors to report."""
        self.reported = True
        top = float(self.strength.max()) if self.strength.size else 0.0
        seen = self.strength > 0
        self.members = (seen & (self.strength >= min(single_level, 0.5 * top))) | self.stuck
        self.peak_z = np.abs(self.z)
        return seen | self.stuck

    def recovered(
        self,
        z: FloatArray,
        scope: BoolArray,
        excess: float,
        config: MonitorConfig,
    ) -> bool:
        """Whether this reading counts towards the end (see module).

        ``z`` are the smoothed z-scores now, ``scope`` the sensors that must recover and
        ``excess`` their statistic over the alarm level.
        """
        now = np.abs(z)
        self.peak_z = np.maximum(self.peak_z, np.where(scope, now, 0.0))
        members = self.members & scope
        receded = bool(
            np.all(now[members] <= config.recover_fraction * self.peak_z[members])
            and np.all(now[scope] <= config.recover_offset_sd)
        )
        return excess < config.clear_ratio or receded
