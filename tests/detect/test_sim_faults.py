"""The Monitor and the signature analysis on the simulated plant, fault by fault.

Every simulated fault runs through one DeviceMonitor per device: it must open exactly one
episode, on the pump, soon after onset, whose early pattern agrees with the simulator's
stated signature (``faults.SIGNATURES``) and ranks the right root cause first; where the
fault has a relief, applying it must clear the episode within the Coordinator's verify
window. A fault-free hour, speed changes and a stop/start must open nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from plantcrew.detect import (
    DeviceMonitor,
    MonitorState,
    default_signatures_path,
    load_signatures,
    rank_root_causes,
)
from plantcrew.messages import AnomalyCleared, AnomalyDetected
from plantcrew.plant import SimulatedPlant
from plantcrew.plant.faults import SIGNATURES
from plantcrew.plant.spec import FaultSpec, FaultType, default_plant

MIN_CONFIDENCE = 0.5  # config/playbooks.yaml diagnose.min_confidence
VERIFY_S = 240.0  # config/crew.yaml coordinator.verify_timeout_s
RELIEF_AFTER_S = 30.0

Command = tuple[str, str, dict[str, Any]]


@dataclass
class Run:
    detected: list[tuple[float, AnomalyDetected]] = field(default_factory=list)
    cleared: list[tuple[float, AnomalyCleared]] = field(default_factory=list)
    relieved_at: float | None = None
    monitors: dict[str, DeviceMonitor] = field(default_factory=dict)


def simulate(
    faults: list[FaultSpec],
    seed: int,
    seconds: int,
    *,
    relief: Command | None = None,
    commands: dict[float, Command] | None = None,
) -> Run:
    """Run the default plant through one monitor per device; apply ``relief`` after the
    first detection (``RELIEF_AFTER_S`` later) and ``commands`` at their plant times."""
    plant = SimulatedPlant(default_plant(), faults, seed)
    out = Run(monitors={d: DeviceMonitor(d) for d in plant.device_ids})
    pending = dict(commands or {})
    relief_due: float | None = None
    for _ in range(seconds):
        for t in [t for t in pending if t <= plant.t]:
            plant.apply(*pending.pop(t))
        if relief is not None and relief_due is not None and plant.t >= relief_due:
            plant.apply(*relief)
            out.relieved_at, relief_due, relief = plant.t, None, None
        for batch in plant.step():
            event = out.monitors[batch.device_id].update(batch).event
            if isinstance(event, AnomalyDetected):
                out.detected.append((plant.t, event))
                if relief_due is None and relief is not None:
                    relief_due = plant.t + RELIEF_AFTER_S
            elif isinstance(event, AnomalyCleared):
                out.cleared.append((plant.t, event))
    return out


CASES: list[tuple[str, FaultSpec, int, Command | None]] = [
    (
        "cavitation",
        FaultSpec(type=FaultType.CAVITATION, device="pump1", at=600, ramp_s=10),
        1200,
        ("pump1", "set_speed", {"speed_pct": 80}),
    ),
    (
        "inlet_valve_closure",
        FaultSpec(type=FaultType.INLET_VALVE_CLOSURE, device="inlet_valve", at=500, ramp_s=10),
        1100,
        ("inlet_valve", "set_position", {"position_pct": 100}),
    ),
    (
        "outlet_valve_closure",
        FaultSpec(type=FaultType.OUTLET_VALVE_CLOSURE, device="outlet_valve", at=550, ramp_s=10),
        1100,
        ("outlet_valve", "set_position", {"position_pct": 100}),
    ),
    (
        "bearing_overheating",
        FaultSpec(type=FaultType.BEARING_OVERHEATING, device="pump1", at=600, ramp_s=30),
        1000,
        ("pump1", "stop", {}),
    ),
    (
        "rotor_imbalance",
        FaultSpec(type=FaultType.ROTOR_IMBALANCE, device="pump1", at=600, ramp_s=20),
        1100,
        None,
    ),
    (
        "sensor_stuck",
        FaultSpec(type=FaultType.SENSOR_STUCK, device="pump1", sensor="flow_rate", at=500),
        1000,
        None,
    ),
    (
        "sensor_drift",
        FaultSpec(type=FaultType.SENSOR_DRIFT, device="pump1", sensor="pressure", at=500),
        1000,
        None,
    ),
]


@pytest.fixture(scope="module")
def book():
    return load_signatures(default_signatures_path())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("cause", "fault", "seconds", "relief"), CASES, ids=[c[0] for c in CASES])
def test_each_fault_is_one_episode_with_the_right_cause(book, cause, fault, seconds, relief, seed):
    run = simulate([fault], seed, seconds, relief=relief)
    assert [e.device_id for _, e in run.detected] == ["pump1"], "one episode, on the pump"
    _, event = run.detected[0]
    assert fault.at <= event.ts <= fault.at + 60, "detected within a minute of onset"
    top = rank_root_causes(event.deviations, book)[0]
    assert top.root_cause == cause and top.score >= MIN_CONFIDENCE, top
    z = {d.sensor: d.z for d in event.deviations}
    sig = SIGNATURES[fault.type]
    assert all(z[s] > 1 for s in sig.up), z
    assert all(z[s] < -1 for s in sig.down), z
    if fault.sensor is not None:
        assert event.deviations[0].sensor == fault.sensor
    if relief is None:
        assert run.cleared == [], "a fault nobody relieves stays open"
    else:
        assert run.relieved_at is not None and len(run.cleared) == 1
        took = run.cleared[0][0] - run.relieved_at
        assert 0 < took <= VERIFY_S, f"cleared {took:.0f} s after the relief"


def test_a_fault_free_hour_opens_nothing_and_valves_are_not_monitored():
    run = simulate([], seed=11, seconds=3600)
    assert run.detected == [] and run.cleared == []
    assert run.monitors["pump1"].calibrated and run.monitors["tank1"].calibrated
    for valve in ("inlet_valve", "outlet_valve"):
        assert not run.monitors[valve].calibrated, "position_pct is actuator feedback"


def test_operating_point_changes_open_nothing():
    """Speed changes (affinity laws; thermal sensors settle) and a stop/start are normal."""
    commands: dict[float, Command] = {
        900.0: ("pump1", "set_speed", {"speed_pct": 80}),
        1700.0: ("pump1", "set_speed", {"speed_pct": 100}),
        2300.0: ("pump1", "set_speed", {"speed_pct": 60}),
        2900.0: ("pump1", "stop", {}),
        3200.0: ("pump1", "start", {}),
    }
    run = simulate([], seed=3, seconds=3900, commands=commands)
    assert run.detected == []
    pump = run.monitors["pump1"]
    assert pump.state is MonitorState.NORMAL


def test_thermal_sensors_settle_after_a_speed_change():
    commands: dict[float, Command] = {700.0: ("pump1", "set_speed", {"speed_pct": 70})}
    run = simulate([], seed=4, seconds=760, commands=commands)
    assert set(run.monitors["pump1"].settling) == {"motor_temperature", "fluid_temperature"}
    assert {d.sensor for d in run.monitors["pump1"].deviations()}.isdisjoint(
        {"motor_temperature", "fluid_temperature"}
    )


def test_same_seed_same_events():
    fault = CASES[0][1]

    def events(seed: int) -> list[tuple[float, str, float]]:
        run = simulate([fault], seed, 1000, relief=CASES[0][3])
        out = [(t, e.kind, e.ts) for t, e in run.detected]
        out += [(t, e.kind, e.ts) for t, e in run.cleared]
        return out

    first = events(7)
    assert first and events(7) == first
