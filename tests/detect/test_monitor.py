"""DeviceMonitor: calibration, scoring, one incident per episode, stopped devices, stuck sensors."""

from __future__ import annotations

import pytest

from plantcrew.detect import DeviceMonitor, MonitorConfig, MonitorState, load_monitor_config
from plantcrew.errors import ConfigError
from plantcrew.messages import AnomalyCleared, AnomalyDetected
from tests.detect.helpers import NOMINAL, batch, stream


def run(monitor: DeviceMonitor, batches):
    return [monitor.update(b) for b in batches]


def test_calibrates_then_scores_in_unit_interval():
    m = DeviceMonitor("pump1", MonitorConfig(calibration_readings=200))
    verdicts = run(m, stream(600, seed=1))
    assert all(v.state is MonitorState.CALIBRATING for v in verdicts[:199])
    assert m.calibrated
    assert all(0.0 <= v.score <= 1.0 for v in verdicts)
    assert all(v.score == 0.0 and not v.flag for v in verdicts[:199])
    assert any(v.score > 0 for v in verdicts[200:])


def test_stationary_noise_opens_no_incident():
    m = DeviceMonitor("pump1")
    events = [v.event for v in run(m, stream(3000, seed=2)) if v.event]
    assert events == []


def test_step_fault_opens_exactly_one_incident_and_clears():
    m = DeviceMonitor("pump1")
    data = stream(1600, seed=3, shift={"flow_rate": -6, "pressure": 6}, start=700, end=1000)
    verdicts = run(m, data)
    detected = [v for v in verdicts if isinstance(v.event, AnomalyDetected)]
    cleared = [v for v in verdicts if isinstance(v.event, AnomalyCleared)]
    assert len(detected) == 1 and len(cleared) == 1
    event = detected[0].event
    assert isinstance(event, AnomalyDetected)
    assert 700 <= event.ts <= 730, "the episode starts at the first flagged reading"
    assert cleared[0].ts > 1000
    by_sensor = {d.sensor: d for d in event.deviations}
    assert by_sensor["flow_rate"].direction == "down" and by_sensor["flow_rate"].z < -1
    assert by_sensor["pressure"].direction == "up"
    assert {d.sensor for d in event.deviations[:2]} == {"flow_rate", "pressure"}
    flagged = [i for i, v in enumerate(verdicts) if v.flag]
    assert flagged and min(flagged) >= 700 and max(flagged) < 1100


def test_stopped_device_is_not_scored_and_closes_its_episode():
    cfg = MonitorConfig(calibration_readings=100)
    m = DeviceMonitor("pump1", cfg)
    run(m, stream(300, seed=4, speed=100.0))
    faulty = stream(60, seed=5, shift={"vibration_1": 40, "vibration_2": 40}, start=0, speed=100.0)
    for i, b in enumerate(faulty):
        faulty[i] = batch(300.0 + i, {r.sensor: r.value for r in b.readings}, row=300 + i)
    verdicts = run(m, faulty)
    assert any(isinstance(v.event, AnomalyDetected) for v in verdicts)
    stop = {s: 0.0 for s in NOMINAL} | {"speed_pct": 0.0}
    v = m.update(batch(400.0, stop))
    assert isinstance(v.event, AnomalyCleared)
    assert v.state is MonitorState.STOPPED and v.score == 0.0 and not v.flag
    assert m.update(batch(401.0, stop)).event is None


def test_affinity_laws_normalise_speed_changes():
    """Flow, pressure and current following a speed change by the affinity laws is normal."""
    m = DeviceMonitor("pump1")
    verdicts = run(m, stream(500, seed=6, speed=100.0))
    n = 0.8
    for i, b in enumerate(stream(600, seed=7, speed=80.0)):
        values = {r.sensor: r.value for r in b.readings}
        values["flow_rate"] *= n
        values["pressure"] *= n**2
        values["current"] *= n**3
        values["vibration_1"] *= n**2
        values["vibration_2"] *= n**2
        verdicts.append(m.update(batch(500.0 + i, values)))
    assert not any(v.event for v in verdicts)


def test_speed_change_without_affinity_response_is_anomalous():
    m = DeviceMonitor("pump1")
    run(m, stream(500, seed=6, speed=100.0))
    later = stream(200, seed=7, speed=60.0)
    verdicts = [
        m.update(batch(500.0 + i, {r.sensor: r.value for r in b.readings}))
        for i, b in enumerate(later)
    ]
    assert any(isinstance(v.event, AnomalyDetected) for v in verdicts)


def test_stuck_sensor_is_reported_flat():
    m = DeviceMonitor("pump1", MonitorConfig(stuck_min_readings=30))
    run(m, stream(500, seed=8))
    events = []
    for i, b in enumerate(stream(200, seed=9)):
        values = {r.sensor: r.value for r in b.readings} | {"current": 2.2}
        v = m.update(batch(500.0 + i, values))
        if v.event:
            events.append(v.event)
    assert len(events) == 1 and isinstance(events[0], AnomalyDetected)
    assert events[0].deviations[0].sensor == "current"
    assert events[0].deviations[0].direction == "flat"


def test_rejects_other_devices():
    with pytest.raises(ValueError, match="pump2"):
        DeviceMonitor("pump1").update(batch(0.0, {"flow_rate": 1.0}, device="pump2"))


def test_config_from_yaml_section_and_line_of_error(tmp_path):
    good = tmp_path / "crew.yaml"
    good.write_text("crew: {}\nmonitor:\n  calibration_readings: 120\n  debounce_readings: 3\n")
    cfg = load_monitor_config(good)
    assert cfg.calibration_readings == 120 and cfg.debounce_readings == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitor:\n  calibration_readings: 120\n  fast_tau_s: -1\n")
    with pytest.raises(ConfigError) as err:
        load_monitor_config(bad)
    assert err.value.line == 3 and err.value.field == "monitor.fast_tau_s"
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("monitor:\n  threshold: 3\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml:2"):
        load_monitor_config(unknown)
