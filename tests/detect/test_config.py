"""MonitorConfig's times: every field in seconds or per second is known to be one, so a copy
for another sampling period (NAB's 5-minute files) changes all of them."""

from __future__ import annotations

import math

import pytest

from plantcrew.detect.config import (
    PER_SECOND_FIELDS,
    SECONDS_FIELDS,
    UNSCALED_TIME_FIELDS,
    MonitorConfig,
)
from plantcrew.errors import ConfigError


def test_every_field_in_seconds_or_per_second_is_scaled_or_exempted_by_name():
    # A new field named *_s or *_per_s must join SECONDS_FIELDS / PER_SECOND_FIELDS, or
    # UNSCALED_TIME_FIELDS with the reason it keeps its value on any sampling period.
    fields = set(MonitorConfig.model_fields)
    per_second = {f for f in fields if f.endswith("_per_s")}
    seconds = {f for f in fields if f.endswith("_s")} - per_second
    assert per_second - set(UNSCALED_TIME_FIELDS) == set(PER_SECOND_FIELDS)
    assert seconds - set(UNSCALED_TIME_FIELDS) == set(SECONDS_FIELDS)
    assert set(UNSCALED_TIME_FIELDS) <= fields, "an exemption names no field"
    assert all(UNSCALED_TIME_FIELDS.values()), "an exemption gives no reason"


def test_a_copy_for_another_period_scales_times_and_rates_and_nothing_else():
    base = MonitorConfig(baseline_tau_s=250.0, thermal_drift_per_s=0.01)
    scaled = base.for_sampling_period(300.0)
    for name in MonitorConfig.model_fields:
        was, now = getattr(base, name), getattr(scaled, name)
        if name in SECONDS_FIELDS:
            assert now == pytest.approx(was * 300.0), name
        elif name in PER_SECOND_FIELDS:
            assert now == pytest.approx(was / 300.0), name
        else:
            assert now == was, name
    assert base.for_sampling_period(1.0) == base


@pytest.mark.parametrize("period", [0.0, -1.0, math.inf, math.nan])
def test_a_sampling_period_that_is_no_duration_is_refused(period):
    with pytest.raises(ConfigError, match="sampling period"):
        MonitorConfig().for_sampling_period(period)
