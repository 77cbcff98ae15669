"""``MonitorConfig``: how the Monitor calibrates, scores and groups readings into episodes.

Loaded from the ``monitor:`` section of a scenario file or ``config/crew.yaml`` with
:func:`load_monitor_config`; every field has a default that works on a pump at 1 Hz.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plantcrew.detect.yamlio import load_yaml_model


class MonitorConfig(BaseModel):
    """Settings of :class:`~plantcrew.detect.monitor.DeviceMonitor` (times in plant seconds).

    Scoring: each sensor is robust-scaled against its calibration baseline, smoothed by an
    EWMA with time constant ``fast_tau_s``, and the smoothed vector's squared Mahalanobis
    distance under the calibration covariance is compared with a threshold taken from the
    calibration distances (quantile ``threshold_quantile`` times ``threshold_factor``, never
    below the chi-square bound of ``chi2_floor_alpha``).
    Episodes: ``debounce_readings`` consecutive readings over the threshold open one;
    ``clear_readings`` consecutive readings under ``clear_ratio`` times the threshold close it;
    no new episode opens for ``cooldown_s`` after one closes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    calibration_readings: int = Field(400, ge=30, description="readings used to calibrate")
    fast_tau_s: float = Field(20.0, gt=0, description="EWMA time constant of the scored signal")
    baseline_tau_s: float = Field(
        600.0, ge=0, description="slow baseline tracking outside episodes (drift); 0 = off"
    )
    thermal_sensors: list[str] = Field(
        default_factory=lambda: ["*temperature*"],
        description="fnmatch patterns of slow thermal sensors, scored on their changes",
    )
    thermal_tau_s: float = Field(
        60.0, gt=0, description="baseline of thermal sensors tracks always with this constant"
    )
    threshold_quantile: float = Field(0.99, gt=0.5, lt=1.0)
    threshold_factor: float = Field(2.0, gt=0)
    chi2_floor_alpha: float = Field(1e-3, gt=0, lt=0.5)
    clear_ratio: float = Field(0.5, gt=0, le=1.0, description="hysteresis: clear below this x thr")
    debounce_readings: int = Field(5, ge=1)
    clear_readings: int = Field(30, ge=1)
    cooldown_s: float = Field(60.0, ge=0)
    stop_speed_pct: float = Field(5.0, ge=0, description="speed_pct below this = not running")
    speed_sensor: str = "speed_pct"
    exclude_sensors: list[str] = Field(
        default_factory=lambda: ["speed_pct", "*valve*"],
        description="fnmatch patterns of sensors never scored",
    )
    stuck_min_readings: int = Field(
        60, ge=3, description="identical repeats (and 3x the longest calibration run) = stuck"
    )
    max_deviations: int = Field(8, ge=1, description="deviations reported per anomaly")
    random_state: int = 0

    @model_validator(mode="after")
    def _check(self) -> MonitorConfig:
        if self.debounce_readings >= self.calibration_readings:
            raise ValueError("debounce_readings must be smaller than calibration_readings")
        return self


def load_monitor_config(path: Path | str, *, section: str | None = "monitor") -> MonitorConfig:
    """Read a ``MonitorConfig`` from ``path`` (its ``section``; None = the whole file).

    A missing section gives the defaults. Raises ConfigError naming file, line and field.
    """
    return load_yaml_model(path, MonitorConfig, section=section)
