"""``DeviceMonitor``: streaming multivariate anomaly detection for one device.

One reading (a :class:`~plantcrew.messages.TelemetryBatch`) at a time, no look-ahead:

1. Features: the device's sensors minus the excluded ones (``speed_pct``, valve positions);
   with ``speed_pct`` present, flow, pressure and current are normalised by the pump affinity
   laws (flow/n, pressure/n², current/n³, vibration/n², n = speed_pct/100). A device under
   ``stop_speed_pct`` is not running: it is not scored and an open episode closes.
2. Calibration: the first ``calibration_readings`` running readings (SKAB's protocol: rows
   0-399) fit a robust baseline and covariance (:mod:`plantcrew.detect.calibration`).
3. Score: robust z-scores, EWMA-smoothed (``fast_tau_s``), squared Mahalanobis distance
   ``d2``; ``score = d2 / (d2 + threshold)`` lies in [0, 1) and is 0.5 at the threshold.
   A sensor that repeats one value far longer than it ever did in calibration is stuck and
   pushes the score to at least 0.8.
4. Episodes: debounce, hysteresis and cooldown (see :class:`MonitorConfig`) give one
   :class:`AnomalyDetected` per fault episode and one :class:`AnomalyCleared` when it ends.
   ``flag`` is True for the readings of an open episode.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from plantcrew.detect.calibration import (
    Calibration,
    FloatArray,
    band_filter,
    base_taus,
    calibrate,
)
from plantcrew.detect.config import MonitorConfig
from plantcrew.messages import AnomalyCleared, AnomalyDetected, Deviation, TelemetryBatch

DETECTOR_NAME = "robust-ewma-mcd"
AFFINITY_EXPONENTS = {
    "flow_rate": 1,
    "pressure": 2,
    "current": 3,
    "vibration_1": 2,
    "vibration_2": 2,
}
STUCK_SCORE = 0.8


class MonitorState(StrEnum):
    """Where a device's monitor is: calibrating, stopped, normal, pending, anomalous, cooldown."""

    CALIBRATING = "calibrating"
    STOPPED = "stopped"
    NORMAL = "normal"
    PENDING = "pending"
    ANOMALOUS = "anomalous"
    COOLDOWN = "cooldown"


@dataclass(frozen=True)
class ReadingVerdict:
    """The Monitor's verdict on one reading.

    ``score`` in [0, 1] (0.5 = at the alarm threshold), ``flag`` True while an episode is
    open, ``event`` an AnomalyDetected when an episode opens on this reading, an
    AnomalyCleared when one closes, else None. ``row`` echoes ``TelemetryBatch.row``.
    """

    device_id: str
    ts: float
    row: int | None
    score: float
    flag: bool
    state: MonitorState
    event: AnomalyDetected | AnomalyCleared | None = None


class DeviceMonitor:
    """Streaming detector and episode tracker for one device (deterministic, numpy only).

    ``update`` costs a few tens of microseconds per reading once calibrated. Readings of other
    devices raise ValueError. Sensors first seen after calibration are ignored; a sensor
    missing from a batch keeps its last value.
    """

    def __init__(self, device_id: str, config: MonitorConfig | None = None) -> None:
        self.device_id = device_id
        self.config = config or MonitorConfig()
        self.state = MonitorState.CALIBRATING
        self.calibration: Calibration | None = None
        self._sensors: list[str] = []
        self._units: dict[str, str] = {}
        self._cal_ts: list[float] = []
        self._cal_rows: list[list[float]] = []
        self._last: dict[str, float] = {}
        self._smooth: FloatArray | None = None
        self._baseline: FloatArray | None = None
        self._prev_ts: float | None = None
        self._prev_x: FloatArray | None = None
        self._run: np.ndarray | None = None
        self._over = 0
        self._under = 0
        self._first_over_ts = 0.0
        self._cooldown_until = -math.inf
        self._peak = 0.0
        self._base_tau = np.zeros(0)
        self._thermal = np.zeros(0, dtype=bool)

    # ---- public ------------------------------------------------------------------------

    @property
    def calibrated(self) -> bool:
        """True once the calibration readings have been taken."""
        return self.calibration is not None

    def update(self, batch: TelemetryBatch) -> ReadingVerdict:
        """Score one reading and advance the episode state; see the module docstring."""
        if batch.device_id != self.device_id:
            raise ValueError(f"batch of device {batch.device_id!r} sent to {self.device_id!r}")
        ts = batch.readings[0].ts
        values: dict[str, float] = {}
        for r in batch.readings:
            values[r.sensor] = r.value
            if r.unit:
                self._units.setdefault(r.sensor, r.unit)
        speed = values.get(self.config.speed_sensor)
        if speed is not None and speed < self.config.stop_speed_pct:
            return self._stopped(ts, batch.row)
        x = self._features(values, speed)
        if x is None:
            return self._verdict(ts, batch.row, 0.0)
        if self.calibration is None:
            return self._calibrating(ts, batch.row, x)
        return self._score(ts, batch.row, x)

    # ---- features ----------------------------------------------------------------------

    def _scored(self, sensor: str) -> bool:
        return not any(fnmatch.fnmatch(sensor, pat) for pat in self.config.exclude_sensors)

    def _features(self, values: dict[str, float], speed: float | None) -> FloatArray | None:
        if self.calibration is None and not self._cal_rows:
            self._sensors.extend(s for s in values if self._scored(s) and s not in self._sensors)
        for s in self._sensors:
            if s in values:
                v = values[s]
                if speed is not None and s in AFFINITY_EXPONENTS:
                    v = v / (speed / 100.0) ** AFFINITY_EXPONENTS[s]
                self._last[s] = v
        if not self._sensors or any(s not in self._last for s in self._sensors):
            return None
        return np.array([self._last[s] for s in self._sensors], dtype=np.float64)

    # ---- states ------------------------------------------------------------------------

    def _calibrating(self, ts: float, row: int | None, x: FloatArray) -> ReadingVerdict:
        self._cal_ts.append(ts)
        self._cal_rows.append(x.tolist())
        if len(self._cal_rows) >= self.config.calibration_readings:
            cal = calibrate(
                tuple(self._sensors),
                np.asarray(self._cal_ts),
                np.asarray(self._cal_rows),
                self.config,
            )
            self.calibration = cal
            self._baseline = cal.median.copy()
            self._base_tau = base_taus(cal.sensors, self.config)
            self._thermal = np.isfinite(self._base_tau) & (
                self._base_tau == self.config.thermal_tau_s
            )
            cal_x, cal_ts = np.asarray(self._cal_rows), np.asarray(self._cal_ts)
            self._smooth = band_filter(
                cal_x, cal_ts, cal.median, cal.scale, self.config.fast_tau_s, self._base_tau
            )[-1].copy()
            self._prev_ts = ts
            self._prev_x = x
            self._run = np.ones(len(self._sensors), dtype=np.int64)
            self._cal_ts, self._cal_rows = [], []
            self.state = MonitorState.NORMAL
        return self._verdict(ts, row, 0.0)

    def _stopped(self, ts: float, row: int | None) -> ReadingVerdict:
        event: AnomalyCleared | None = None
        if self.state is MonitorState.ANOMALOUS:
            event = AnomalyCleared(device_id=self.device_id, ts=ts)
        if self.calibration is not None:
            self.state = MonitorState.STOPPED
            self._smooth = np.zeros(len(self._sensors))
            self._prev_ts = None
            self._over = self._under = 0
        return self._verdict(ts, row, 0.0, event=event)

    def _score(self, ts: float, row: int | None, x: FloatArray) -> ReadingVerdict:
        cal = self.calibration
        assert cal is not None and self._smooth is not None and self._baseline is not None
        cfg = self.config
        if self.state is MonitorState.STOPPED:
            self.state = MonitorState.NORMAL
        dt = 0.0 if self._prev_ts is None else max(ts - self._prev_ts, 0.0)
        z = (x - self._baseline) / cal.scale
        if self._prev_ts is None:
            self._smooth = z.copy()
        elif dt > 0:
            self._smooth += (1.0 - math.exp(-dt / cfg.fast_tau_s)) * (z - self._smooth)
        d2 = float(self._smooth @ cal.precision @ self._smooth)
        score = d2 / (d2 + cal.threshold)
        stuck = self._stuck(x)
        if stuck.any():
            score = max(score, STUCK_SCORE)
        self._prev_ts, self._prev_x = ts, x
        event = self._advance(ts, score)
        if dt > 0:
            step = (1.0 - np.exp(-dt / self._base_tau)) * (x - self._baseline)
            if self.state is not MonitorState.NORMAL:
                step = np.where(self._thermal, step, 0.0)
            self._baseline += step
        return self._verdict(ts, row, score, event=event, stuck=stuck)

    def _stuck(self, x: FloatArray) -> np.ndarray:
        cal = self.calibration
        assert cal is not None and self._run is not None and self._prev_x is not None
        same = x == self._prev_x
        self._run = np.where(same, self._run + 1, 1)
        limit = np.maximum(self.config.stuck_min_readings, 3 * cal.max_run)
        return np.asarray((self._run >= limit) & ~cal.constant)

    def _advance(self, ts: float, score: float) -> AnomalyDetected | AnomalyCleared | None:
        cfg = self.config
        over = score >= 0.5
        clear = score < cfg.clear_ratio / (cfg.clear_ratio + 1.0)
        if self.state is MonitorState.COOLDOWN:
            if ts < self._cooldown_until:
                return None
            self.state = MonitorState.NORMAL
        if self.state is MonitorState.ANOMALOUS:
            self._peak = max(self._peak, score)
            self._under = self._under + 1 if clear else 0
            if self._under >= cfg.clear_readings:
                self.state = MonitorState.COOLDOWN
                self._cooldown_until = ts + cfg.cooldown_s
                self._under = 0
                return AnomalyCleared(device_id=self.device_id, ts=ts)
            return None
        if not over:
            self._over = 0
            self.state = MonitorState.NORMAL
            return None
        if self._over == 0:
            self._first_over_ts = ts
        self._over += 1
        self.state = MonitorState.PENDING
        if self._over < cfg.debounce_readings:
            return None
        self._over = 0
        self._under = 0
        self._peak = score
        self.state = MonitorState.ANOMALOUS
        return AnomalyDetected(
            device_id=self.device_id,
            score=min(max(score, 0.0), 1.0),
            ts=self._first_over_ts,
            deviations=self.deviations(),
            detector=DETECTOR_NAME,
        )

    # ---- reporting ---------------------------------------------------------------------

    def deviations(self, stuck: np.ndarray | None = None) -> list[Deviation]:
        """The current smoothed deviation of each scored sensor, largest ``|z|`` first.

        Empty before calibration. A stuck sensor is reported with direction ``flat``.
        """
        cal = self.calibration
        if cal is None or self._smooth is None or self._baseline is None:
            return []
        run = self._run if self._run is not None else np.ones(len(self._sensors), dtype=np.int64)
        limit = np.maximum(self.config.stuck_min_readings, 3 * cal.max_run)
        is_stuck = (run >= limit) & ~cal.constant if stuck is None else stuck
        out = []
        for i, s in enumerate(self._sensors):
            zi = float(self._smooth[i])
            direction = "flat" if is_stuck[i] else ("up" if zi >= 0 else "down")
            out.append(
                Deviation(
                    sensor=s,
                    value=float(self._baseline[i] + zi * cal.scale[i]),
                    baseline=float(self._baseline[i]),
                    z=zi,
                    direction=direction,
                    unit=self._units.get(s, ""),
                )
            )
        out.sort(key=lambda d: (d.direction != "flat", -abs(d.z)))
        return out[: self.config.max_deviations]

    def _verdict(
        self,
        ts: float,
        row: int | None,
        score: float,
        *,
        event: AnomalyDetected | AnomalyCleared | None = None,
        stuck: np.ndarray | None = None,
    ) -> ReadingVerdict:
        return ReadingVerdict(
            device_id=self.device_id,
            ts=ts,
            row=row,
            score=float(min(max(score, 0.0), 1.0)),
            flag=self.state is MonitorState.ANOMALOUS,
            state=self.state,
            event=event,
        )
