"""A calibrated device whose readings pause for longer than ``gap_s`` (60 s) but no longer
than ``resume_gap_s`` (1800 s): the historian dropped minutes, or the plant stopped while
nothing was recorded. The calibration is kept; the smoothed deviations restart and the
thermal sensors settle as after a stop, so a healthy plant opens no incident, while a fault
present when the readings resume is still found."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plantcrew.detect import (
    DeviceMonitor,
    MonitorConfig,
    default_signatures_path,
    load_signatures,
    rank_root_causes,
)
from plantcrew.messages import AnomalyCleared, AnomalyDetected, TelemetryBatch
from plantcrew.plant import SimulatedPlant
from plantcrew.plant.spec import FaultSpec, FaultType, default_plant
from tests.detect.helpers import NOMINAL, batch

CAL_S = 1200  # plant seconds of readings before the pause (calibration takes 400)
AFTER_S = 1800  # plant seconds watched after it
MIN_CONFIDENCE = 0.5  # config/playbooks.yaml diagnose.min_confidence


def pump(plant: SimulatedPlant, seconds: float) -> list[TelemetryBatch]:
    """The pump's batches over the next ``seconds`` of plant time."""
    return [b for b in plant.run(seconds) if b.device_id == "pump1"]


def events(
    batches: list[TelemetryBatch],
) -> tuple[list[AnomalyDetected | AnomalyCleared], DeviceMonitor]:
    m = DeviceMonitor("pump1")
    out = [v.event for v in map(m.update, batches) if v.event is not None]
    return out, m


@pytest.mark.parametrize("gap_s", [300.0, 1200.0])
def test_a_stop_the_readings_did_not_see_opens_no_incident(gap_s):
    """The simulated pump stops for ``gap_s`` while nothing is recorded, starts again, and
    the readings resume a minute later at full speed: the winding (time constant 150 s) and
    the fluid (1800 s) cooled meanwhile and now warm up. Nothing is wrong. Before the pause
    rule every seed opened an incident on the first reading after the gap (motor temperature
    170-360 noise sd below its baseline, diagnosed unknown, circuit water increase or sensor
    drift)."""
    for seed in range(2):
        plant = SimulatedPlant(default_plant(), seed=seed)
        seen = pump(plant, CAL_S)
        plant.apply("pump1", "stop", {})
        plant.run(gap_s)
        plant.apply("pump1", "start", {})
        plant.run(60)
        seen += pump(plant, AFTER_S)
        out, m = events(seen)
        assert out == [], (seed, out)
        assert m.pauses == 1 and m.last_pause_s == gap_s + 61 and m.restarts == 0


def test_readings_lost_for_minutes_open_no_incident():
    """The plant runs on, unchanged, while the historian loses 20 minutes of readings. Before
    the pause rule the smoothed deviations took the first reading after the gap whole (one
    unsmoothed reading against the spread of a smoothed one), and seeds 0 and 2 of these
    three opened an incident there."""
    for seed in range(3):
        plant = SimulatedPlant(default_plant(), seed=seed)
        seen = pump(plant, CAL_S)
        plant.run(1200)
        seen += pump(plant, AFTER_S)
        out, m = events(seen)
        assert out == [], (seed, out)
        assert m.pauses == 1 and m.calibrated


def test_a_fault_present_when_the_readings_resume_is_found_and_diagnosed():
    """The inlet valve closes during a 10-minute gap in the readings: the readings resume on
    the fault. It opens one incident at the first readings after the gap, ranked an inlet
    valve closure, as it would without the gap."""
    fault = FaultSpec(type=FaultType.INLET_VALVE_CLOSURE, device="pump1", at=CAL_S + 300)
    plant = SimulatedPlant(default_plant(), [fault], seed=4)
    seen = pump(plant, CAL_S)
    plant.run(600)
    resumed = plant.t
    seen += pump(plant, 600)
    out, _ = events(seen)
    assert [type(e) for e in out] == [AnomalyDetected]
    detected = out[0]
    assert isinstance(detected, AnomalyDetected) and detected.ts - resumed <= 30
    ranked = rank_root_causes(detected.deviations, load_signatures(default_signatures_path()))
    assert ranked[0].root_cause == "inlet_valve_closure" and ranked[0].score >= MIN_CONFIDENCE


AMBIENT = 20.0


def cooled(rng: np.random.Generator, t: float, stop: float, gap: float, tau: float) -> dict:
    """NOMINAL readings at ``t`` of a plant stopped over ``[stop, stop + gap)``: its thermal
    sensors cool towards AMBIENT and warm back with the time constant ``tau`` (first-order
    lags), the others read as before."""
    out = {s: mu + sd * rng.standard_normal() for s, (mu, sd) in NOMINAL.items()}
    if t >= stop:
        left = math.exp(-min(t - stop, gap) / tau)  # share of the rise kept at the restart
        back = 1.0 - math.exp(-max(t - stop - gap, 0.0) / tau)  # share warmed back since
        for s in ("motor_temperature", "fluid_temperature"):
            rise = NOMINAL[s][0] - AMBIENT
            out[s] -= rise * (1.0 - left) * (1.0 - back)
    return out


@pytest.mark.parametrize("gap", [300.0, 1200.0])
@pytest.mark.parametrize("tau", [120.0, 1800.0])
def test_a_stop_cools_the_thermal_sensors_and_opens_no_incident(gap, tau):
    """A synthetic stop of ``gap`` s between readings: the thermal sensors resume as an
    exponential cool-down over the gap leaves them (time constants of 2 and 30 minutes, the
    range the settling rule assumes, plantcrew/detect/settling.py) and warm back up. With a
    30-minute constant a 20-minute stop leaves the winding 24 °C (240 noise sd) cold."""
    rng = np.random.default_rng(int(gap + tau))
    m = DeviceMonitor("pump1")
    stop = 1000.0
    times = [float(t) for t in range(int(stop))]
    times += [stop + gap + t for t in range(3600)]
    out = [v.event for t in times if (v := m.update(batch(t, cooled(rng, t, stop, gap, tau))))]
    out = [e for e in out if e is not None]
    assert out == [] and m.pauses == 1


def test_an_episode_open_across_a_pause_carries_on_and_a_fault_at_resume_is_found():
    """A fault open before a 5-minute pause and still there after it keeps its one incident
    (no clear at the gap, no second report); once it is gone the episode clears. A fault that
    begins during a later pause opens a new incident when the readings resume."""
    rng = np.random.default_rng(5)
    shift = {"flow_rate": -8, "pressure": 8}

    def reading(t: float, on: bool) -> TelemetryBatch:
        v = {s: mu + sd * rng.standard_normal() for s, (mu, sd) in NOMINAL.items()}
        for s, k in (shift if on else {}).items():
            v[s] += k * NOMINAL[s][1]
        return batch(t, v)

    m = DeviceMonitor("pump1")
    seen = [reading(float(t), t >= 700) for t in range(800)]
    seen += [reading(1100.0 + t, t < 200) for t in range(600)]  # the fault ends at 1300
    seen += [reading(2000.0 + t, True) for t in range(300)]  # began during 1700-2000
    got = [(v.ts, type(v.event)) for b in seen if (v := m.update(b)).event is not None]
    kinds = [k for _, k in got]
    assert kinds == [AnomalyDetected, AnomalyCleared, AnomalyDetected], got
    assert 700 <= got[0][0] < 800 and 1300 <= got[1][0] < 1700 and got[2][0] >= 2000
    assert m.pauses == 2


def test_a_pause_no_longer_than_gap_s_changes_nothing():
    """A pause of exactly ``gap_s`` is an ordinary interval: no pause is counted."""
    cfg = MonitorConfig()
    m = DeviceMonitor("pump1", cfg)
    rng = np.random.default_rng(6)
    for t in [*range(500), *(499 + cfg.gap_s + i for i in range(100))]:
        v = {s: mu + sd * rng.standard_normal() for s, (mu, sd) in NOMINAL.items()}
        m.update(batch(float(t), v))
    assert m.pauses == 0 and m.last_pause_s is None


def drift_across_a_pause(
    sensor: str, pause: float, duration_s: float | None
) -> tuple[list[AnomalyDetected | AnomalyCleared], float]:
    """The simulated pump's ``sensor`` (a thermal one) drifts upwards from 1200 s, 1 noise sd
    every 2 s; the readings pause from 1400 s for ``pause`` s and are watched for 1800 s
    after it. The drift lasts ``duration_s`` (None: for ever). Returns the events and the
    plant time of the first reading after the pause."""
    fault = FaultSpec(
        type=FaultType.SENSOR_DRIFT, device="pump1", sensor=sensor, at=1200, duration_s=duration_s
    )
    plant = SimulatedPlant(default_plant(), [fault], seed=0)
    seen = pump(plant, 1400)
    plant.run(pause)
    resumed = plant.t
    seen += pump(plant, AFTER_S)
    out, m = events(seen)
    assert m.pauses == 1
    return out, resumed


@pytest.mark.parametrize("pause", [300.0, 600.0])
@pytest.mark.parametrize("sensor", ["motor_temperature", "fluid_temperature"])
def test_a_thermal_fault_open_across_a_pause_keeps_its_one_incident(sensor, pause):
    """An episode only a thermal sensor carries (a drifting temperature transmitter) is open
    when the readings pause, and the drift goes on. After the pause that sensor settles
    unscored, as after a stop; before, the other sensors, calm, cleared the episode 30
    readings after the resume, and the drift, never calm enough to settle, was silently
    dropped until ``settle_max_s`` (3600 s) later, when a second incident opened for the
    same fault. Now a settling member shows no recovery: the one incident stays open."""
    out, _ = drift_across_a_pause(sensor, pause, None)
    assert [type(e) for e in out] == [AnomalyDetected], out


@pytest.mark.parametrize("sensor", ["motor_temperature", "fluid_temperature"])
def test_a_thermal_fault_that_ends_during_a_pause_clears_once(sensor):
    """The same drift ends during a 5-minute pause: the readings resume normal. The sensor
    settles (``settle_min_s``, then calm readings), is scored again and the episode clears,
    once, with no second incident (210 s after the resume; 30 s before this rule)."""
    out, resumed = drift_across_a_pause(sensor, 300.0, 250.0)
    assert [type(e) for e in out] == [AnomalyDetected, AnomalyCleared], out
    assert resumed < out[1].ts <= resumed + 600


@pytest.mark.parametrize("sensor", ["motor_temperature", "fluid_temperature"])
def test_a_speed_step_during_a_thermal_fault_does_not_clear_it(sensor):
    """The same rule for the other cause of settling: the speed set to 60 % while a drifting
    temperature alone carries an open episode. Its sensor settles unscored; before, the
    episode cleared 30 readings after the step while the drift went on (and a second
    incident opened once the winding was scored again). Now the one incident stays open."""
    fault = FaultSpec(type=FaultType.SENSOR_DRIFT, device="pump1", sensor=sensor, at=1200)
    plant = SimulatedPlant(default_plant(), [fault], seed=0)
    seen = pump(plant, 1400)
    plant.apply("pump1", "set_speed", {"speed_pct": 60.0})
    seen += pump(plant, AFTER_S)
    out, m = events(seen)
    assert [type(e) for e in out] == [AnomalyDetected], out
    assert m.pauses == 0
