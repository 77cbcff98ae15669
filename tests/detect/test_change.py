"""Change alarms: a per-sensor CUSUM flags a small step within seconds, not white noise, not a
recovery, and never opens an episode by itself."""

from __future__ import annotations

import numpy as np

from plantcrew.detect import DeviceMonitor, MonitorConfig
from plantcrew.detect.change import ChangeAlarm, white_limit
from tests.detect.helpers import stream


def test_white_limit_gives_the_run_length_it_promises():
    """Simulated in-control run length of a one-sided CUSUM at the limit for 1/alpha = 1000
    readings is about 1000 (Siegmund's approximation is good to some per cent)."""
    k, h = 1.0, white_limit(1.0, 1e-3)
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(300):
        s, n = 0.0, 0
        while s <= h:
            s = max(0.0, s + rng.standard_normal() - k)
            n += 1
        runs.append(n)
    assert 700 < np.mean(runs) < 1400
    assert white_limit(1.0, 1e-5) > white_limit(1.0, 1e-3) > white_limit(2.0, 1e-3)


def test_fit_sets_limits_from_calibration_wander_and_skips_unwatched_sensors():
    rng = np.random.default_rng(1)
    n = 400
    ts = np.arange(n, dtype=float)
    white = rng.standard_normal(n)
    wander = np.cumsum(rng.standard_normal(n)) * 0.3 + rng.standard_normal(n)  # a random walk
    rated = np.column_stack([white, wander, white])
    cfg = MonitorConfig()
    alarm = ChangeAlarm.fit(
        ts, rated, np.ones_like(rated), np.ones(3), np.array([True, True, False]), cfg
    )
    floor = white_limit(cfg.change_k, cfg.alpha)
    assert alarm.limit[0] >= floor
    assert alarm.limit[1] > alarm.limit[0], "a wandering sensor gets a wider limit"
    assert np.isinf(alarm.limit[2])


def _flags(data, **cfg):
    return [v.flag for v in (DeviceMonitor("pump1", MonitorConfig(**cfg)).update(b) for b in data)]


def test_a_small_step_is_flagged_within_seconds_long_before_the_episode_detector():
    data = stream(900, seed=21, shift={"flow_rate": -2.5}, start=600)
    monitor = DeviceMonitor("pump1")
    verdicts = [monitor.update(b) for b in data]
    first = next(i for i, v in enumerate(verdicts) if v.flag)
    assert 600 <= first <= 615
    assert verdicts[first].change, "the first flag is the change alarm's"
    without = _flags(data, change_alarms=False)
    assert next((i for i, f in enumerate(without) if f), len(without)) > first + 10


def test_white_noise_and_a_recovery_raise_no_change_alarm():
    quiet = stream(3000, seed=22)
    assert not any(_flags(quiet)[400:])
    # a step away from normal and back: the step back (a recovery) is not flagged by itself
    data = stream(1500, seed=23, shift={"flow_rate": -8.0}, start=600, end=900)
    monitor = DeviceMonitor("pump1")
    verdicts = [monitor.update(b) for b in data]
    changes = [i for i, v in enumerate(verdicts) if v.change]
    assert changes and all(600 <= i < 620 for i in changes)
