"""``DeviceMonitor``: streaming multivariate anomaly detection for one device.

One reading (a :class:`~plantcrew.messages.TelemetryBatch`) at a time, no look-ahead:

1. Features (:mod:`plantcrew.detect.features`): the device's sensors minus actuator feedback
   (speed, valve positions, setpoints). With ``speed_pct``, each affinity-law sensor is
   compared with its rated-speed baseline times ``(speed/100) ** k``. A device under
   ``stop_speed_pct`` is not running: it is not scored and an open episode closes; after a
   restart no new episode opens for ``cooldown_s`` (start-up transients).
2. Calibration: the first ``calibration_readings`` running readings (SKAB's protocol: rows
   0-399) fit a robust baseline, spreads, correlation and thresholds
   (:mod:`plantcrew.detect.calibration`). A calibration interrupted (no reading for
   ``gap_s``) after ``early_readings`` readings is not assumed to be one normal regime: an
   early detector calibrated on the readings before the pause scores those after it, so a
   fault that begins there opens its episode as it begins (reported while calibrating;
   ``flag`` and ``score`` are then the early detector's) and its readings do not calibrate.
   If that episode is still open when calibration ends, calibration takes every reading
   (SKAB's protocol) and the episode carries on until it clears against it. Once
   calibrated, readings that resume after more than ``resume_gap_s`` (the historian was
   down, the plant stopped) are a restart: an open episode ends (AnomalyCleared on the first
   reading after the gap) and the device calibrates again on the readings after it, the old
   calibration, restarted as after a stop, being the early detector meanwhile
   (:meth:`DeviceMonitor._resume`). A shorter pause, of more than ``gap_s``, keeps the
   calibration, but the smoothed deviations restart and the thermal sensors settle as after
   a stop (:meth:`DeviceMonitor._pause`).
3. Score: z-scores in noise units, EWMA-smoothed (``fast_tau_s``); the ``excess`` is the
   larger of the squared Mahalanobis distance over its threshold and the largest single
   sensor's squared strength over its own (:meth:`Subspace.excess`), and
   ``score = excess / (excess + 1)`` lies in [0, 1), 0.5 at the alarm level. A sensor that
   repeats one raw value longer than calibration makes plausible is stuck: it leaves the
   statistic and pushes the score to at least 0.8.
4. Operating regime: thermal sensors follow the operating point with a lag of minutes, so
   after the speed moves by ``regime_step_pct``, the device restarts or an episode ends they
   are not scored until they have settled (see :class:`MonitorConfig`); so are those still
   moving when calibration ends (:meth:`ThermalSettling.carry`). Non-thermal baselines
   follow slow drift (``baseline_tau_s``) while the readings look normal; during an
   episode, those of the sensors outside it keep following.
5. Episodes: ``debounce_readings`` readings over the threshold open one; its
   :class:`AnomalyDetected` carries ``ts`` = the first of them (the detection time) but is
   emitted ``summary_s`` later, with each sensor's strongest deviation over the episode's
   first seconds, so the diagnosis sees the fault's early pattern rather than one reading.
   The sensors that carried it then are its members. It clears when the readings are back
   under ``clear_ratio`` x the alarm level, or when every member has receded to
   ``recover_fraction`` of its peak with nothing more than ``recover_offset_sd`` noise sd
   off (the level it settled at becomes the baseline), for ``clear_readings`` readings. When
   a fast (non-thermal) sensor is a member only fast sensors count: a thermal sensor still
   relaxing to a new operating point does not hold the episode open. When only thermal
   sensors are members, one of them settling (not scored, after a pause or a speed step)
   shows no recovery: no reading counts towards the end until it is scored again (the
   other sensors, calm, would otherwise clear an episode whose fault goes on, and it would
   open again as a second incident once the sensor is scored). ``flag`` is True for
   the readings of an open episode.
6. Change alarms (:mod:`plantcrew.detect.change`, ``change_alarms``): a per-sensor CUSUM
   flags a fast sensor's step away from its normal level within seconds; it sets ``flag``
   (and ``ReadingVerdict.change``) for at most ``debounce_readings`` readings, outside an
   episode and its cooldown, and never opens an episode.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from plantcrew.detect.calibration import (
    RAW_LIMIT,
    Z_LIMIT,
    BoolArray,
    Calibration,
    FloatArray,
    calibrate,
    ewma_weight,
)
from plantcrew.detect.change import ChangeAlarm
from plantcrew.detect.config import MonitorConfig
from plantcrew.detect.episode import Episode
from plantcrew.detect.features import affinity_gain, matches
from plantcrew.detect.settling import ThermalSettling
from plantcrew.detect.units import UnitGuard, UnitMismatch
from plantcrew.messages import AnomalyCleared, AnomalyDetected, Deviation, TelemetryBatch

DETECTOR_NAME = "robust-ewma-mcd"
STUCK_SCORE = 0.8


class MonitorState(StrEnum):
    """Where a device's monitor is: calibrating, stopped, normal, pending, anomalous, cooldown."""

    CALIBRATING = "calibrating"
    STOPPED = "stopped"
    NORMAL = "normal"
    PENDING = "pending"
    ANOMALOUS = "anomalous"
    COOLDOWN = "cooldown"


_CALM = (MonitorState.CALIBRATING, MonitorState.NORMAL)
"""Early-detector states whose readings may calibrate (no episode, start-up or recovery)."""
_OPEN = (MonitorState.PENDING, MonitorState.ANOMALOUS)


@dataclass(frozen=True)
class ReadingVerdict:
    """The Monitor's verdict on one reading.

    ``score`` in [0, 1] (0.5 = at the alarm threshold), ``flag`` True while an episode is
    open or a change alarm is on (``change``: a fast sensor stepped away from its normal
    level, see :mod:`plantcrew.detect.change`), ``event`` an AnomalyDetected when an
    episode's opening is reported on this reading, an AnomalyCleared when one closes, else
    None. ``row`` echoes ``TelemetryBatch.row``. ``rejected``: the batch's readings in another
    unit than their sensor's (not scored; the caller dead-letters them with their reason, see
    :mod:`plantcrew.detect.units`).
    """

    device_id: str
    ts: float
    row: int | None
    score: float
    flag: bool
    state: MonitorState
    event: AnomalyDetected | AnomalyCleared | None = None
    change: bool = False
    rejected: tuple[UnitMismatch, ...] = ()


class DeviceMonitor:
    """Streaming detector and episode tracker for one device (deterministic, numpy only).

    ``update`` costs some tens of microseconds per reading once calibrated. Readings of other
    devices raise ValueError. Sensors first seen after calibration began are not monitored
    (``unmonitored`` names them); those constant over calibration are not scored
    (``constant``). A sensor missing from a batch keeps its last value, which is no new
    reading: once calibrated, its
    smoothed deviation, baseline, change alarm and run of repeats (stuck) stand still. A
    reading more than ``gap_s`` older than the last is a clock reset: the cooldown, an
    episode's report and thermal settling keep the time they had left. Once calibrated, a
    reading more than ``resume_gap_s`` newer than the last is a restart (``restarts``,
    ``last_gap_s``): the device recalibrates (see the module docstring); one more than
    ``gap_s`` newer is a pause (``pauses``, ``last_pause_s``): the calibration is kept. A
    reading in another unit than the one its sensor's first reading named is not scored (see
    :mod:`plantcrew.detect.units`; the verdict's ``rejected``); a batch left with no reading
    changes nothing (its verdict repeats the last one's score, flag and state).
    """

    def __init__(self, device_id: str, config: MonitorConfig | None = None) -> None:
        self.device_id = device_id
        self.config = config or MonitorConfig()
        self.restarts = 0
        """How many times a pause of more than ``resume_gap_s`` restarted the device."""
        self.last_gap_s: float | None = None
        """The last such pause, plant seconds (None before the first)."""
        self.pauses = 0
        """How many times, once calibrated, the readings resumed after more than ``gap_s``
        but at most ``resume_gap_s`` (a pause: the calibration is kept)."""
        self.last_pause_s: float | None = None
        """The last such pause, plant seconds (None before the first)."""
        self._sensors: list[str] = []
        self._known: set[str] = set()  # monitored, excluded or unmonitored: seen and placed
        self._fixed = False  # the sensor set was fixed before (kept over a restart)
        self._pause_restarts = True  # a pause restarts the smoothing (not in an early detector)
        self.unmonitored: list[str] = []
        """Sensors first seen after the sensor set was fixed (at the first calibration
        reading), in order of arrival: they are not monitored (see the Monitor agent's
        warning); every sensor must be in the device's first batches."""
        self._begin()

    def _begin(self) -> None:
        """Start (or, after a restart, start again) calibrating: no reading taken yet."""
        self.state = MonitorState.CALIBRATING
        self.calibration: Calibration | None = None
        self._units = UnitGuard()
        self._verdict_last: ReadingVerdict | None = None
        self._cal_ts: list[float] = []
        self._cal_x: list[list[float]] = []
        self._cal_gain: list[list[float]] = []
        self._cal_speed: list[float] = []
        self._last: dict[str, float] = {}
        self._speed: float | None = None
        self._seen_ts: float | None = None
        p = 0
        self._base = np.zeros(p)
        self._smooth = np.zeros(p)
        self._x = np.zeros(p)
        self._present = np.zeros(p, dtype=bool)
        self._gain = np.ones(p)
        self._run = np.zeros(p, dtype=np.int64)
        self._prev_raw: FloatArray | None = None
        self._settling = ThermalSettling(np.zeros(p, dtype=bool), self.config)
        self._prev_ts: float | None = None
        self._period = 0.0  # the last interval between readings that was no pause
        self._regime_speed: float | None = None
        self._over = 0
        self._pending: Episode | None = None
        self._episode: Episode | None = None
        self._cooldown_until = -math.inf
        self._early: DeviceMonitor | None = None
        self._change: ChangeAlarm | None = None
        self._cal_keep: list[bool] = []
        self._cal_batches: list[TelemetryBatch] = []

    # ---- public ------------------------------------------------------------------------

    @property
    def calibrated(self) -> bool:
        """True once the calibration readings have been taken."""
        return self.calibration is not None

    @property
    def constant(self) -> list[str]:
        """Sensors that did not change over calibration: they have no noise scale, so they are
        not scored, whatever they do later (the Monitor agent logs a warning naming them)."""
        cal = self.calibration
        if cal is None:
            return []
        return [s for s, c in zip(self._sensors, cal.constant, strict=True) if c]

    @property
    def sensors(self) -> list[str]:
        """The sensors monitored (fixed at the first calibration reading; see ``unmonitored``)."""
        return list(self._sensors)

    @property
    def settling(self) -> list[str]:
        """Thermal sensors not scored now because they are settling to a new regime."""
        return [s for s, on in zip(self._sensors, self._settling.mask, strict=False) if on]

    def update(self, batch: TelemetryBatch) -> ReadingVerdict:
        """Score one reading and advance the episode state; see the module docstring.

        Raises ValueError for another device's batch."""
        if batch.device_id != self.device_id:
            raise ValueError(f"batch of device {batch.device_id!r} sent to {self.device_id!r}")
        ts = batch.readings[0].ts
        ended = None
        if self._seen_ts is not None and ts - self._seen_ts > self.config.resume_gap_s:
            ended = self._resume(ts)
        kept, rejected = self._units.check(batch)
        if not kept:  # no reading to take: nothing changes
            last = self._verdict_last or self._verdict(ts, batch.row, 0.0)
            return replace(last, ts=ts, row=batch.row, event=ended, change=False, rejected=rejected)
        if rejected:
            batch = batch.model_copy(update={"readings": kept})
        self._seen_ts = ts
        verdict = self._update(batch, ts)
        if ended is not None:
            assert verdict.event is None, "the first reading after a restart reports nothing"
            verdict = replace(verdict, event=ended)
        if rejected:
            verdict = replace(verdict, rejected=rejected)
        self._verdict_last = verdict
        return verdict

    def _update(self, batch: TelemetryBatch, ts: float) -> ReadingVerdict:
        values: dict[str, float] = {}
        for r in batch.readings:
            values[r.sensor] = min(max(r.value, -RAW_LIMIT), RAW_LIMIT)
        speed = values.get(self.config.speed_sensor, self._speed)
        self._speed = speed
        early = self._interrupted(batch, ts) if self.calibration is None else None
        if speed is not None and speed < self.config.stop_speed_pct:
            return self._stopped(ts, batch.row, early)
        if not self._read(values, speed):
            return self._verdict(ts, batch.row, 0.0, early=early)
        if self.calibration is None:
            return self._calibrating(ts, batch.row, speed, early)
        return self._score(ts, batch.row, speed)

    def deviations(self) -> list[Deviation]:
        """The current smoothed deviation of each scored sensor, largest ``|z|`` first.

        Empty before calibration. Settling thermal sensors are left out; a stuck sensor is
        reported with direction ``flat``.
        """
        if self.calibration is None:
            return []
        stuck = self._stuck_mask()
        return self._report(self._smooth, self._base * self._gain, ~self._settling.mask, stuck)

    # ---- features ----------------------------------------------------------------------

    def _read(self, values: dict[str, float], speed: float | None) -> bool:
        """Update the last feature and raw values; False until every sensor has been seen."""
        cfg = self.config
        if self.calibration is None and not self._cal_x and not self._fixed:
            for s in values:
                if s not in self._sensors and not matches(s, cfg.exclude_sensors):
                    self._sensors.append(s)
        elif not self._known.issuperset(values):
            if not self._known:
                self._known.update(self._sensors)
            for s in values:
                if s not in self._known:
                    self._known.add(s)
                    if not matches(s, cfg.exclude_sensors):
                        self.unmonitored.append(s)
        self._last.update({s: v for s, v in values.items() if s in self._sensors})
        if not self._sensors or any(s not in self._last for s in self._sensors):
            return False
        self._x = np.array([self._last[s] for s in self._sensors], dtype=np.float64)
        self._present = np.array([s in values for s in self._sensors], dtype=bool)
        self._gain = np.array([affinity_gain(s, speed) for s in self._sensors])
        return True

    # ---- states ------------------------------------------------------------------------

    def _calibrating(
        self, ts: float, row: int | None, speed: float | None, early: ReadingVerdict | None
    ) -> ReadingVerdict:
        cfg = self.config
        self._cal_ts.append(ts)
        self._cal_x.append(self._x.tolist())
        self._cal_gain.append(self._gain.tolist())
        self._cal_keep.append(early is None or early.state in _CALM)
        if speed is not None:
            self._cal_speed.append(speed)
        if len(self._cal_x) < cfg.calibration_readings:
            return self._verdict(ts, row, 0.0, early=early)
        keep = np.asarray(self._cal_keep)
        carried = self._early._episode if self._early is not None else None
        if carried is not None or keep.sum() < cfg.early_readings:
            keep[:] = True
        cal = calibrate(
            tuple(self._sensors),
            np.asarray(self._cal_ts)[keep],
            np.asarray(self._cal_x)[keep],
            cfg,
            thermal=np.array([matches(s, cfg.thermal_sensors) for s in self._sensors]),
            gain=np.asarray(self._cal_gain)[keep],
        )
        self._early, self._cal_batches = None, []
        self.calibration = cal
        if cfg.change_alarms:
            gain = np.asarray(self._cal_gain)[keep]
            self._change = ChangeAlarm.fit(
                np.asarray(self._cal_ts)[keep],
                np.asarray(self._cal_x)[keep] / gain,
                gain,
                cal.scale,
                ~cal.thermal & ~cal.constant,
                cfg,
            )
        p = len(self._sensors)
        self._base = cal.baseline.copy()
        self._smooth = cal.sample[-1].copy() if len(cal.sample) else np.zeros(p)
        self._run = np.ones(p, dtype=np.int64)
        self._prev_raw = self._x.copy()
        self._settling = ThermalSettling(cal.thermal, cfg)
        self._settling.carry(ts, np.abs(cal.sample) / cal.spread)
        self._prev_ts = ts
        self._regime_speed = float(np.median(self._cal_speed)) if self._cal_speed else None
        self._cal_ts, self._cal_x, self._cal_gain, self._cal_speed = [], [], [], []
        self._cal_keep = []
        self.state = MonitorState.NORMAL
        if carried is not None:
            self._episode, self.state = carried, MonitorState.ANOMALOUS
        return self._verdict(ts, row, 0.0, event=early.event if early else None)

    def _interrupted(self, batch: TelemetryBatch, ts: float) -> ReadingVerdict | None:
        """While calibrating: after an interruption (no reading for ``gap_s``) preceded by
        ``early_readings`` readings, an early detector calibrated on those readings scores
        the rest of calibration (the plant may have changed while nobody watched), so a fault
        that begins there is found as it begins and its readings do not calibrate. Returns
        the early detector's verdict, or None when there is none."""
        cfg = self.config
        if self._early is None:
            n = len(self._cal_ts)
            if n >= cfg.early_readings and ts - self._cal_ts[-1] > cfg.gap_s:
                early_cfg = cfg.model_copy(
                    update={"calibration_readings": n, "resume_gap_s": math.inf}
                )
                self._early = DeviceMonitor(self.device_id, early_cfg)
                # it tests the readings right after this pause against those before it
                self._early._pause_restarts = False
                for b in self._cal_batches:
                    self._early.update(b)
            else:
                self._cal_batches.append(batch)
                return None
        return self._early.update(batch)

    def _resume(self, ts: float) -> AnomalyCleared | None:
        """The readings resumed at ``ts`` after more than ``resume_gap_s`` without one: a
        restart. Returns the AnomalyCleared of an episode left open (reported) before the gap.

        Once calibrated, the device calibrates again on the readings from ``ts`` on (same
        sensors; a sensor's unit is fixed again), and the old calibration, restarted as after
        a stop (no episode open, ``cooldown_s``, thermal sensors settling), is the early
        detector that scores them meanwhile, as after an interruption inside calibration: a
        fault present after the gap is still found, and a plant that came back changed (a
        replaced instrument, a new operating point) is learnt, not alarmed on for ever. An
        episode it opens that is still open when calibration ends carries on until it clears
        against the new calibration. While calibrating, a pause is an interruption instead.
        """
        assert self._seen_ts is not None
        gap = ts - self._seen_ts
        if self.calibration is None:
            return None
        self.restarts += 1
        self.last_gap_s = gap
        old = copy.copy(self)
        old._known, old.unmonitored = set(self._known), []  # the device names them
        old.config = self.config.model_copy(update={"resume_gap_s": math.inf})
        ended = old._stopped(ts, None).event
        self._begin()
        self._fixed, self._early = True, old
        return ended if isinstance(ended, AnomalyCleared) else None

    def _stopped(
        self, ts: float, row: int | None, early: ReadingVerdict | None = None
    ) -> ReadingVerdict:
        event: AnomalyCleared | None = None
        if self._episode is not None and self._episode.reported:
            event = AnomalyCleared(device_id=self.device_id, ts=ts)
        self._episode = self._pending = None
        self._over = 0
        if self.calibration is not None:
            self.state = MonitorState.STOPPED
            self._prev_ts = None
        return self._verdict(ts, row, 0.0, event=event, early=early)

    def _score(self, ts: float, row: int | None, speed: float | None) -> ReadingVerdict:
        cal = self.calibration
        assert cal is not None
        cfg = self.config
        x = self._x
        if self.state is MonitorState.STOPPED:
            self.state = MonitorState.COOLDOWN
            self._cooldown_until = ts + cfg.cooldown_s
            self._settling.start(ts)
        if speed is not None:
            if self._regime_speed is None:
                self._regime_speed = speed
            elif abs(speed - self._regime_speed) >= cfg.regime_step_pct:
                self._regime_speed = speed
                self._settling.start(ts)
        if self._prev_ts is not None and ts < self._prev_ts - cfg.gap_s:
            self._clock_reset(ts - self._prev_ts)
        dt = 0.0 if self._prev_ts is None else max(ts - self._prev_ts, 0.0)
        seen = dt  # plant seconds watched since the last reading
        if dt > cfg.gap_s and self._pause_restarts:
            seen = self._pause(ts, dt)
        elif dt > 0:
            self._period = dt
        with np.errstate(over="ignore"):
            z = np.clip((x - self._base * self._gain) / cal.scale, -Z_LIMIT, Z_LIMIT)
        if self._prev_ts is None:
            self._smooth = np.where(cal.thermal, 0.0, z)
        else:
            step = np.where(self._present, z - self._smooth, 0.0)  # absent: nothing new
            self._smooth += ewma_weight(seen, cfg.fast_tau_s) * step
        self._prev_ts = ts
        stuck = self._update_stuck()
        strength = np.abs(self._smooth) / cal.spread
        self._settling.update(ts, strength)
        active = ~cal.constant & ~self._settling.mask & ~stuck
        excess = self._excess(active)
        score = excess / (excess + 1.0)
        if stuck.any():
            score = max(score, STUCK_SCORE)
        event = self._advance(ts, score, strength, active, stuck)
        change = self._changed(dt, x, stuck)  # its reference follows only while normal
        self._track(dt, seen, x, active, excess)
        return self._verdict(ts, row, score, event=event, change=change)

    def _pause(self, ts: float, gap: float) -> float:
        """The readings resumed at ``ts`` after ``gap`` plant seconds (more than ``gap_s``,
        at most ``resume_gap_s``) without one: the plant may have stopped meanwhile. The
        smoothed deviations restart from the baselines (0; they had forgotten what came
        before, and one reading is no smoothed score), a debouncing episode starts over, and
        the thermal sensors settle as after a stop (a stopped machine has cooled). The
        calibration, an open episode and the cooldown are kept; the fast baselines learn
        nothing from the unseen gap (whether the first reading after it looks normal is not
        known from a restarted smoothing; a change alarm's reference, which its own sum
        gates, follows as before). Returns the plant seconds this reading counts for: one
        ordinary interval between readings."""
        self.pauses += 1
        self.last_pause_s = gap
        self._smooth = np.zeros_like(self._smooth)
        self._over, self._pending = 0, None
        if self.state is MonitorState.PENDING:
            self.state = MonitorState.NORMAL
        self._settling.start(ts)
        return self._period

    def _clock_reset(self, shift: float) -> None:
        """The clock jumped back by ``-shift`` s (more than ``gap_s``: a reset, not a late
        reading): the deadlines set on the old clock (cooldown, an episode's report,
        thermal settling) move with it, so they keep the time they had left."""
        self._cooldown_until += shift
        for ep in (self._pending, self._episode):
            if ep is not None:
                ep.report_at += shift
        self._settling.shift(shift)

    # ---- scoring helpers ---------------------------------------------------------------

    def _excess(self, mask: BoolArray) -> float:
        """How far the smoothed z over ``mask`` lie beyond the alarm level (1 = at it)."""
        cal = self.calibration
        assert cal is not None
        return cal.subspace(mask).excess(self._smooth, cal.spread)

    def _changed(self, dt: float, x: FloatArray, stuck: BoolArray) -> bool:
        """Advance the change alarms; True when one counts on this reading (not while an
        episode is open, which flags anyway, nor in cooldown, when none may open)."""
        cal = self.calibration
        ch = self._change
        if ch is None or cal is None:
            return False
        over = ch.update(dt, x / self._gain, self._gain, self._present)
        if self.state in (MonitorState.ANOMALOUS, MonitorState.COOLDOWN):
            return False
        counted = ch.alarm(over, self._smooth / cal.spread) & ~stuck
        return bool(counted.any())

    def _update_stuck(self) -> BoolArray:
        """Advance each sensor's run of identical raw readings; a sensor absent from this
        batch (it keeps its last value) is no repeat: its run stands still."""
        same = self._x == self._prev_raw
        self._run = np.where(self._present, np.where(same, self._run + 1, 1), self._run)
        self._prev_raw = self._x.copy()
        return self._stuck_mask()

    def _stuck_mask(self) -> BoolArray:
        cal = self.calibration
        assert cal is not None
        return np.asarray((self._run >= cal.stuck_limit) & ~cal.constant)

    def _track(
        self, dt: float, seen: float, x: FloatArray, active: BoolArray, excess: float
    ) -> None:
        """Baselines follow the readings over ``dt`` plant seconds: thermal ones always; the
        others slowly, over the ``seen`` seconds (not a pause's), and only while what they
        are scored with looks normal (a baseline never learns an anomaly): all of them while
        no episode is open, those outside the open episode otherwise."""
        cal = self.calibration
        assert cal is not None
        cfg = self.config
        if dt <= 0:
            return
        rated = x / self._gain
        w_th = ewma_weight(dt, cfg.thermal_tau_s)
        step = np.where(cal.thermal, w_th * (rated - self._base), 0.0)
        follow = ~cal.thermal
        ep = self._episode
        if self.state is MonitorState.PENDING or (ep is not None and not ep.reported):
            follow[:] = False
        elif ep is not None:
            follow &= ~ep.members
            excess = self._excess(active & follow)
        if cfg.baseline_tau_s > 0 and excess < cfg.clear_ratio:
            w = ewma_weight(seen, cfg.baseline_tau_s)
            step = np.where(follow, w * (rated - self._base), step)
        self._base += np.where(self._present, step, 0.0)

    # ---- episodes ----------------------------------------------------------------------

    def _advance(
        self,
        ts: float,
        score: float,
        strength: FloatArray,
        active: BoolArray,
        stuck: BoolArray,
    ) -> AnomalyDetected | AnomalyCleared | None:
        cfg = self.config
        if self.state is MonitorState.COOLDOWN:
            if ts < self._cooldown_until:
                return None
            self.state = MonitorState.NORMAL
        if self.state is MonitorState.ANOMALOUS:
            return self._in_episode(ts, score, strength, active, stuck)
        if score < 0.5:
            self._over = 0
            self._pending = None
            self.state = MonitorState.NORMAL
            return None
        if self._pending is None:
            self._pending = Episode.begin(ts, cfg.summary_s, self._base * self._gain)
        self._observe(self._pending, score, strength, active, stuck)
        self._over += 1
        self.state = MonitorState.PENDING
        if self._over < cfg.debounce_readings:
            return None
        self._over = 0
        self._episode, self._pending = self._pending, None
        self.state = MonitorState.ANOMALOUS
        return self._report_if_due(ts)

    def _observe(
        self, ep: Episode, score: float, strength: FloatArray, active: BoolArray, stuck: BoolArray
    ) -> None:
        ep.observe(score, self._smooth, strength, self._base * self._gain, active, stuck)

    def _in_episode(
        self,
        ts: float,
        score: float,
        strength: FloatArray,
        active: BoolArray,
        stuck: BoolArray,
    ) -> AnomalyDetected | AnomalyCleared | None:
        ep = self._episode
        cal = self.calibration
        assert ep is not None and cal is not None
        cfg = self.config
        if not ep.reported:
            self._observe(ep, score, strength, active, stuck)
            return self._report_if_due(ts)
        fast = ~cal.thermal
        by_fast = bool((ep.members & fast).any())
        scope = active & fast if by_fast else active.copy()
        calm = ep.recovered(self._smooth, scope, self._excess(scope), cfg)
        # a stuck member shows no recovery; nor, when thermal ones alone carry the episode,
        # does one settling unscored (the calm other sensors are no sign its fault is gone)
        unseen = stuck | (self._settling.mask if not by_fast else False)
        unseen &= ep.members
        ep.calm_readings = ep.calm_readings + 1 if calm and not unseen.any() else 0
        if ep.calm_readings < cfg.clear_readings:
            return None
        anchor = scope & fast
        self._base = np.where(
            anchor, self._base + self._smooth * cal.scale / self._gain, self._base
        )
        self._smooth = np.where(anchor, 0.0, self._smooth)
        self._episode = None
        self.state = MonitorState.COOLDOWN
        self._cooldown_until = ts + cfg.cooldown_s
        self._settling.start(ts)
        return AnomalyCleared(device_id=self.device_id, ts=ts)

    def _report_if_due(self, ts: float) -> AnomalyDetected | None:
        ep = self._episode
        cal = self.calibration
        assert ep is not None and cal is not None
        if not ep.due(ts):
            return None
        shown = ep.report(cal.univariate)
        return AnomalyDetected(
            device_id=self.device_id,
            score=min(max(ep.peak_score, 0.0), 1.0),
            ts=ep.start_ts,
            deviations=self._report(ep.z, ep.baseline, shown, ep.stuck),
            detector=DETECTOR_NAME,
        )

    # ---- reporting ---------------------------------------------------------------------

    def _report(
        self, z: FloatArray, baseline: FloatArray, include: BoolArray, stuck: BoolArray
    ) -> list[Deviation]:
        cal = self.calibration
        assert cal is not None
        out = []
        for i, s in enumerate(self._sensors):
            if not (include[i] or stuck[i]):
                continue
            zi = float(z[i])
            out.append(
                Deviation(
                    sensor=s,
                    value=float(self._last[s])
                    if stuck[i]
                    else float(baseline[i] + zi * cal.scale[i]),
                    baseline=float(baseline[i]),
                    z=zi,
                    direction="flat" if stuck[i] else ("up" if zi >= 0 else "down"),
                    unit=self._units.units.get(s, ""),
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
        early: ReadingVerdict | None = None,
        change: bool = False,
    ) -> ReadingVerdict:
        """The verdict; while calibrating, the early detector's score, flag and event."""
        if early is not None and self.calibration is None:
            score, event = early.score, event or early.event
        return ReadingVerdict(
            device_id=self.device_id,
            ts=ts,
            row=row,
            score=float(min(max(score, 0.0), 1.0)),
            flag=self.state is MonitorState.ANOMALOUS or change or bool(early and early.flag),
            state=self.state,
            event=event,
            change=change,
        )
