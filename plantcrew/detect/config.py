"""``MonitorConfig``: how the Monitor calibrates, scores and groups readings into episodes.

Loaded from the ``monitor:`` section of a scenario file or ``config/crew.yaml`` with
:func:`load_monitor_config`; every field has a default that works on a pump at 1 Hz.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plantcrew.detect.yamlio import load_yaml_model
from plantcrew.errors import ConfigError

ACTUATOR_FEEDBACK = ["speed_pct", "position_pct", "*setpoint*"]
"""Sensors that echo what an actuator was told to do; never scored (see MonitorConfig)."""


SECONDS_FIELDS = (
    "gap_s",
    "resume_gap_s",
    "fast_tau_s",
    "baseline_tau_s",
    "thermal_tau_s",
    "settle_min_s",
    "settle_max_s",
    "change_tau_s",
    "summary_s",
    "cooldown_s",
)
"""MonitorConfig's fields in plant seconds: :meth:`MonitorConfig.for_sampling_period`
multiplies them by the period. Fields counted in readings (``*_readings``) need nothing."""

PER_SECOND_FIELDS = ("thermal_drift_per_s",)
"""MonitorConfig's fields per plant second (rates): ``for_sampling_period`` divides them."""

UNSCALED_TIME_FIELDS: dict[str, str] = {}
"""Fields named ``*_s`` or ``*_per_s`` that keep their value on any sampling period, each
with the reason (none yet). tests/detect/test_config.py fails for a field so named that is in
none of these three."""


class MonitorConfig(BaseModel):
    """Settings of :class:`~plantcrew.detect.monitor.DeviceMonitor` (times in plant seconds).

    Scoring: each sensor's reading is compared with its baseline in units of its calibration
    noise (``z``) and smoothed by an EWMA with time constant ``fast_tau_s``. The device alarms
    when the smoothed vector's squared Mahalanobis distance passes the chi-square ``1 - alpha``
    quantile for the number of scored sensors, or one sensor's squared strength
    (``z / spread``) passes the one-degree quantile at ``1 - alpha / k`` (Bonferroni over the
    ``k`` sensors); neither threshold is below ``threshold_factor`` times the
    ``threshold_quantile`` of the same statistic over the calibration readings.
    ``min_spread`` floors each sensor's modelled smoothed spread (in noise sd): a short
    calibration never sees a plant's slow wander, so one sensor must shift by about
    ``min_spread * 4.6`` noise sd before it alarms (the smallest shift worth an alarm, as in
    EWMA chart design). Baselines of non-thermal sensors follow the readings with
    ``baseline_tau_s`` while the sensors they score look normal (excess under
    ``clear_ratio``), so slow drift is followed and an anomaly is never learnt.

    Thermal sensors (``thermal_sensors``) are slow consequences of the operating point: they
    are scored on their changes (their baseline always follows them with ``thermal_tau_s``;
    a change slower than ``thermal_drift_per_s`` is wander) and, after the operating point
    changes (the speed moves by ``regime_step_pct`` or more, the device restarts, or an
    episode ends), they settle: they are not scored until, at least ``settle_min_s`` after the
    change, their change has stayed within ``settle_z`` spreads for ``clear_readings``
    readings, or for at most ``settle_max_s``. A thermal sensor whose change reached
    ``settle_z`` on any of calibration's last ``clear_readings`` readings is still settling
    when calibration ends and settles the same way (without the ``settle_min_s`` wait).

    Episodes: ``debounce_readings`` consecutive readings over the threshold open one (its time
    is the first of them); the AnomalyDetected event follows ``summary_s`` later with each
    sensor's strongest deviation over those first seconds. The sensors that carried it then
    are its members. It clears after ``clear_readings`` consecutive readings where either the
    scored sensors are back under ``clear_ratio`` times the threshold, or every member has
    receded to ``recover_fraction`` of its peak and no sensor lies more than
    ``recover_offset_sd`` noise sd off (the plant settled a little off its old point, which
    becomes the new baseline). Only fast (non-thermal) sensors count when a fast sensor is a
    member; otherwise a thermal member settling unscored (after a pause or a speed step)
    shows no recovery, so no reading counts until it is scored again. No new episode opens
    for ``cooldown_s`` after one closes or the device restarts.

    Change alarms (``change_alarms``, :mod:`plantcrew.detect.change`): a two-sided CUSUM per
    fast (non-thermal) sensor flags a step within seconds, while the episode detector above
    takes tens. Drift allowance ``change_k`` noise sd (half a 2 sd step); limit
    ``change_limit_factor`` times the largest value the statistic reached over calibration
    (at least the white-noise limit for ``1 / alpha`` readings); the reference follows the
    readings with ``change_tau_s``; an alarm counts only while the sensor's smoothed
    deviation lies ``change_away`` smoothed spreads or more on the step's side of normal. It
    raises the reading's ``flag`` for at most ``debounce_readings`` readings and opens no
    episode.

    Interruptions: a pause of more than ``gap_s`` (four ``fast_tau_s``: the smoothed score
    has forgotten what came before) inside calibration, after at least ``early_readings``
    readings (four ``fast_tau_s`` again), splits it: the readings after it are tested
    against those before it (see :class:`~plantcrew.detect.monitor.DeviceMonitor`). Once
    calibrated, a pause of more than ``resume_gap_s`` (the historian was down, the plant was
    stopped: a restart) ends an open episode and recalibrates the device on the readings
    after it, the old calibration scoring them meanwhile as an interruption's early detector.
    Its default, 30 minutes, is six ``baseline_tau_s`` (the baselines would have followed the
    plant's drift to within 0.25 % of where it went; now nobody saw where it went) and the
    longest thermal time constant the settling rule assumes (a stopped machine has cooled).
    A shorter pause of more than ``gap_s`` keeps the calibration, the baselines and an open
    episode, but the plant may have stopped meanwhile: the smoothed deviations restart from
    the baselines (the first reading after it counts as one ordinary interval, not as the
    whole smoothed score), a debouncing episode starts over, the fast baselines learn
    nothing from the unseen time, and the thermal sensors settle as after a stop
    (``settle_min_s``, ``settle_z``). No cooldown follows: a fault
    present when the readings resume is found as it would be without the pause. SKAB's
    longest pause after calibration is 76 s.

    The defaults were chosen on the simulator (no false alarm in fault-free hours, every
    simulated fault found and diagnosed) and the shared SKAB files (``bench/skab.py``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    calibration_readings: int = Field(400, ge=30, description="readings used to calibrate")
    gap_s: float = Field(
        60.0,
        gt=0,
        description="a pause in the readings longer than this is an interruption: the plant "
        "may have changed unobserved (see MonitorConfig)",
    )
    resume_gap_s: float = Field(
        1800.0,
        gt=0,
        description="once calibrated, a pause in the readings longer than this is a restart: "
        "an open episode ends and the device recalibrates on the readings after it",
    )
    early_readings: int = Field(
        60,
        ge=30,
        description="readings needed before an interruption inside calibration to test the "
        "readings after it against them",
    )
    fast_tau_s: float = Field(15.0, gt=0, description="EWMA time constant of the scored signal")
    baseline_tau_s: float = Field(
        300.0, ge=0, description="slow baseline tracking of normal-looking readings; 0 = off"
    )
    thermal_sensors: list[str] = Field(
        default_factory=lambda: ["*temperature*"],
        description="fnmatch patterns of slow thermal sensors, scored on their changes",
    )
    thermal_tau_s: float = Field(
        60.0, gt=0, description="baseline of thermal sensors tracks always with this constant"
    )
    thermal_drift_per_s: float = Field(
        0.002,
        ge=0,
        description="a temperature change this slow (units/s) is ordinary wander: it floors "
        "a thermal sensor's spread at thermal_drift_per_s * thermal_tau_s",
    )
    regime_step_pct: float = Field(
        2.0, gt=0, description="a speed change this large is a new operating point"
    )
    settle_z: float = Field(3.0, gt=0, description="a thermal sensor has settled within this")
    settle_min_s: float = Field(
        180.0, ge=0, description="shortest settling (a lagging transient takes time to show)"
    )
    settle_max_s: float = Field(3600.0, ge=0, description="longest settling of a thermal sensor")
    min_spread: float = Field(0.35, ge=0, description="floor of a smoothed spread, noise sd")
    alpha: float = Field(1e-5, gt=0, lt=0.5, description="chi-square tail of the threshold")
    threshold_quantile: float = Field(0.99, gt=0.5, lt=1.0)
    threshold_factor: float = Field(1.5, gt=0)
    correlation_shrinkage: float = Field(
        0.2, ge=0, le=1, description="calibration correlation pulled this far to identity"
    )
    clear_ratio: float = Field(0.5, gt=0, le=1.0, description="hysteresis: clear below this x thr")
    recover_fraction: float = Field(
        0.3,
        ge=0,
        le=1,
        description="an episode also ends when its sensors have receded to "
        "this share of their peak strength ...",
    )
    recover_offset_sd: float = Field(
        3.0, ge=0, description="... and lie within this many noise sd of their old baseline"
    )
    debounce_readings: int = Field(5, ge=1)
    change_alarms: bool = Field(True, description="per-sensor CUSUM step flags (see above)")
    change_k: float = Field(1.0, gt=0, description="CUSUM drift allowance, noise sd")
    change_limit_factor: float = Field(3.0, gt=0, description="x calibration's largest CUSUM")
    change_tau_s: float = Field(120.0, gt=0, description="the CUSUM reference follows this")
    change_away: float = Field(1.0, ge=0, description="smoothed spreads off normal to count")
    summary_s: float = Field(
        20.0, ge=0, description="AnomalyDetected follows the episode's first reading by this"
    )
    clear_readings: int = Field(30, ge=1)
    cooldown_s: float = Field(60.0, ge=0)
    stop_speed_pct: float = Field(5.0, ge=0, description="speed_pct below this = not running")
    speed_sensor: str = "speed_pct"
    exclude_sensors: list[str] = Field(
        default_factory=lambda: list(ACTUATOR_FEEDBACK),
        description="fnmatch patterns of sensors never scored (actuator feedback: the speed, "
        "valve positions and setpoints follow commands, they are not process variables)",
    )
    stuck_min_readings: int = Field(
        5, ge=3, description="a sensor is never stuck before this many identical readings"
    )
    stuck_alpha: float = Field(
        1e-9, gt=0, lt=1, description="chance of a run of repeats under calibration behaviour"
    )
    max_deviations: int = Field(8, ge=1, description="deviations reported per anomaly")
    random_state: int = 0

    @model_validator(mode="after")
    def _check(self) -> MonitorConfig:
        if self.debounce_readings >= self.calibration_readings:
            raise ValueError("debounce_readings must be smaller than calibration_readings")
        return self

    def for_sampling_period(self, period_s: float) -> MonitorConfig:
        """This config for readings every ``period_s`` seconds where it was made for 1 Hz:
        every filter, wait and rate spans the same number of readings (each of
        :data:`SECONDS_FIELDS` multiplied by ``period_s``, each of :data:`PER_SECOND_FIELDS`
        divided by it, nothing else changed). Raises ConfigError when ``period_s`` is not a
        positive finite number of seconds.
        """
        if not (math.isfinite(period_s) and period_s > 0):
            raise ConfigError(
                f"sampling period {period_s!r} s: must be a positive finite number of seconds"
            )
        update = {name: getattr(self, name) * period_s for name in SECONDS_FIELDS}
        update |= {name: getattr(self, name) / period_s for name in PER_SECOND_FIELDS}
        return self.model_copy(update=update)


def load_monitor_config(path: Path | str, *, section: str | None = "monitor") -> MonitorConfig:
    """Read a ``MonitorConfig`` from ``path`` (its ``section``; None = the whole file).

    A missing section gives the defaults. Raises ConfigError naming file, line and field.
    """
    return load_yaml_model(path, MonitorConfig, section=section)
