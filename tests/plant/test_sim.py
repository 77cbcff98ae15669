"""The simulated plant: determinism, replay, physics at normal operation, command checks."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime

import pytest

from plantcrew.errors import ConfigError, PlantcrewError
from plantcrew.plant import (
    ActuatorError,
    FaultSpec,
    PlantError,
    PlantSpec,
    SimulatedPlant,
    default_plant,
)

from .helpers import NOISE_SD, PUMP_SENSORS, make_plant, record, values

FAULTS = [
    FaultSpec(type="cavitation", device="pump1", at=50, ramp_s=3),
    FaultSpec(type="sensor_drift", device="tank1", sensor="level_pct", at=20),
]
COMMANDS = [
    (60.0, "pump1", "set_speed", {"speed_pct": 80}),
    (75.0, "outlet_valve", "set_position", {"position_pct": 60}),
    (90.0, "pump1", "stop", {}),
]


def _drive(plant: SimulatedPlant, until: float) -> list[dict[str, object]]:
    """Step to ``until``, applying COMMANDS at their times; every batch as a dict."""
    out: list[dict[str, object]] = []
    pending = list(COMMANDS)
    while plant.t < until:
        while pending and pending[0][0] == plant.t:
            _, device, command, params = pending.pop(0)
            plant.apply(device, command, params)
        out.extend(b.model_dump() for b in plant.step())
    return out


def test_same_seed_faults_and_commands_give_identical_readings() -> None:
    first = _drive(SimulatedPlant(default_plant(), FAULTS, seed=42), 120)
    second = _drive(SimulatedPlant(default_plant(), FAULTS, seed=42), 120)
    assert first == second
    assert first != _drive(SimulatedPlant(default_plant(), FAULTS, seed=43), 120)


def test_step_gives_one_batch_per_device_stamped_with_plant_time() -> None:
    plant = make_plant()
    batches = plant.step()
    assert [b.device_id for b in batches] == ["pump1", "inlet_valve", "outlet_valve", "tank1"]
    assert [r.sensor for r in batches[0].readings] == list(PUMP_SENSORS)
    assert {r.ts for b in batches for r in b.readings} == {1.0}
    plant.step()
    assert plant.t == 2.0
    assert plant.clock.now() == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)


def test_replay_to_rebuilds_the_exact_state() -> None:
    plant = SimulatedPlant(default_plant(), FAULTS, seed=5)
    _drive(plant, 100)
    rebuilt = SimulatedPlant(default_plant(), FAULTS, seed=5).replay_to(
        plant.t, json.loads(json.dumps(plant.commands))
    )  # as read back from a store
    assert rebuilt.snapshot() == plant.snapshot()
    assert [b.model_dump() for b in rebuilt.run(30)] == [b.model_dump() for b in plant.run(30)]


def test_replay_refuses_commands_it_cannot_place() -> None:
    plant = make_plant()
    with pytest.raises(PlantError, match="step grid"):
        plant.replay_to(10, [(2.5, "pump1", "stop", {})])
    plant = make_plant()
    with pytest.raises(PlantError, match="before"):
        plant.replay_to(10, [(5.0, "pump1", "stop", {}), (3.0, "pump1", "start", {})])
    with pytest.raises(PlantError, match="after the replay target"):
        make_plant().replay_to(10, [(20.0, "pump1", "stop", {})])
    with pytest.raises(ActuatorError, match="pump9"):
        make_plant().replay_to(10, [(5.0, "pump9", "stop", {})])


def test_normal_operation_matches_the_rated_point() -> None:
    pump = record(make_plant(), 120)["pump1"]
    expected = {
        "flow_rate": 125.0,
        "pressure": 1.0,
        "current": 2.5,
        "voltage": 230.0,
        "speed_pct": 100.0,
        "vibration_1": 0.2,
        "vibration_2": 0.28,
    }
    for sensor, value in expected.items():
        readings = values(pump[sensor], 0, 120)
        assert statistics.median(readings) == pytest.approx(value, abs=3 * NOISE_SD[sensor])
        assert statistics.stdev(readings) == pytest.approx(NOISE_SD[sensor], rel=0.3)
    assert 70 <= statistics.median(values(pump["motor_temperature"], 0, 120)) <= 85
    assert 28 <= statistics.median(values(pump["fluid_temperature"], 0, 120)) <= 32


def test_affinity_laws_hold_with_speed() -> None:
    plant = make_plant()
    plant.run(10)
    full = plant.state("pump1")
    plant.apply("pump1", "set_speed", {"speed_pct": 70})
    plant.run(30)
    part = plant.state("pump1")
    n = 0.7
    assert part["speed_pct"] == pytest.approx(70)
    assert part["flow_rate"] == pytest.approx(full["flow_rate"] * n)
    assert part["pressure"] == pytest.approx(full["pressure"] * n**2)
    assert part["vibration_1"] == pytest.approx(full["vibration_1"] * n**2)
    assert part["vibration_2"] == pytest.approx(full["vibration_2"] * n**2)
    assert part["current"] == pytest.approx(full["current"] * n**3)


def test_closing_a_valve_lowers_flow_and_moves_pressure_its_way() -> None:
    plant = make_plant()
    plant.run(5)
    rated = plant.state("pump1")
    plant.apply("inlet_valve", "set_position", {"position_pct": 40})
    plant.run(20)
    inlet = plant.state("pump1")
    plant.apply("inlet_valve", "set_position", {"position_pct": 100})
    plant.apply("outlet_valve", "set_position", {"position_pct": 40})
    plant.run(20)
    outlet = plant.state("pump1")
    assert inlet["flow_rate"] < rated["flow_rate"] and outlet["flow_rate"] < rated["flow_rate"]
    assert inlet["pressure"] < rated["pressure"] < outlet["pressure"]


def test_a_stopped_pump_goes_quiet_and_cools_to_ambient() -> None:
    plant = make_plant()
    plant.run(10)
    plant.apply("pump1", "stop", {})
    plant.replay_to(7000)
    pump = record(plant, 200)["pump1"]
    for sensor in ("flow_rate", "pressure", "current", "speed_pct"):
        assert max(values(pump[sensor], 7000, 7200)) < 5 * NOISE_SD[sensor], sensor
    state = plant.state("pump1")
    assert state["running"] == 0.0
    assert abs(state["motor_temperature"] - 25.0) < 2.0  # ambient, give or take the slow cycle
    assert abs(state["fluid_temperature"] - 25.0) < 1.0


def test_set_speed_on_a_stopped_pump_waits_for_start() -> None:
    plant = make_plant()
    plant.apply("pump1", "stop", {})
    plant.run(10)
    assert "start" in plant.apply("pump1", "set_speed", {"speed_pct": 60})
    plant.run(10)
    assert plant.state("pump1")["speed_pct"] == 0.0
    plant.apply("pump1", "start", {})
    plant.run(10)
    assert plant.state("pump1")["speed_pct"] == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("device", "command", "params", "named"),
    [
        ("pump9", "stop", {}, "pump9"),
        ("pump1", "explode", {}, "explode"),
        ("tank1", "set_position", {"position_pct": 10}, "tank1"),
        ("pump1", "set_speed", {}, "speed_pct"),
        ("pump1", "set_speed", {"speed_pct": 111}, "speed_pct"),
        ("pump1", "set_speed", {"speed_pct": True}, "speed_pct"),
        ("pump1", "set_speed", {"speed_pct": float("nan")}, "speed_pct"),
        ("pump1", "set_speed", {"speed_pct": 50, "force": 1}, "force"),
        ("pump1", "stop", {"now": True}, "now"),
        ("inlet_valve", "set_position", {"position_pct": -1}, "position_pct"),
        ("inlet_valve", "set_speed", {"speed_pct": 50}, "set_speed"),
    ],
)
def test_bad_commands_raise_actuator_error_naming_the_culprit(
    device: str, command: str, params: dict[str, object], named: str
) -> None:
    plant = make_plant()
    before = plant.snapshot()
    with pytest.raises(ActuatorError, match=named) as info:
        plant.apply(device, command, params)
    assert isinstance(info.value, PlantcrewError)
    assert plant.snapshot() == before  # nothing changed, nothing recorded


def test_unknown_device_state_and_bad_dt_raise() -> None:
    with pytest.raises(PlantError, match="pump9"):
        make_plant().state("pump9")
    with pytest.raises(PlantError, match="dt"):
        SimulatedPlant(default_plant(), dt=0)


def test_plant_checks_its_faults() -> None:
    with pytest.raises(ConfigError) as info:
        SimulatedPlant(default_plant(), [FaultSpec(type="cavitation", device="pump2", at=1)])
    assert info.value.field == "faults.0.device"


def test_heat_exchanger_cools_the_pump_fluid() -> None:
    spec = PlantSpec.model_validate(
        {
            "devices": [
                *[d.model_dump() for d in default_plant().devices],
                {"type": "heat_exchanger", "id": "hx1"},
            ]
        }
    )
    data = record(SimulatedPlant(spec, seed=1), 60)
    inlet = statistics.median(values(data["hx1"]["inlet_temperature"], 0, 60))
    outlet = statistics.median(values(data["hx1"]["outlet_temperature"], 0, 60))
    fluid = statistics.median(values(data["pump1"]["fluid_temperature"], 0, 60))
    assert inlet == pytest.approx(fluid, abs=0.1)
    assert inlet - outlet == pytest.approx(3.0, abs=0.1)


def test_faults_strike_only_their_own_pump() -> None:
    spec = PlantSpec.model_validate(
        {
            "devices": [
                {
                    "type": "centrifugal_pump",
                    "id": "p1",
                    "inlet_valve": "a_in",
                    "outlet_valve": "a_out",
                },
                {
                    "type": "centrifugal_pump",
                    "id": "p2",
                    "inlet_valve": "b_in",
                    "outlet_valve": "b_out",
                    "rated_flow_lpm": 300,
                },
                {"type": "valve", "id": "a_in", "role": "inlet"},
                {"type": "valve", "id": "a_out", "role": "outlet"},
                {"type": "valve", "id": "b_in", "role": "inlet"},
                {"type": "valve", "id": "b_out", "role": "outlet"},
                {"type": "heat_exchanger", "id": "hx2", "pump": "p2"},
            ]
        }
    )
    plant = SimulatedPlant(spec, [FaultSpec(type="outlet_valve_closure", device="p2", at=10)])
    plant.run(40)
    assert plant.state("p1")["flow_rate"] == pytest.approx(125.0)
    assert plant.state("p2")["flow_rate"] < 0.5 * 300
    assert plant.state("b_out")["position_pct"] == pytest.approx(15.0)
    assert plant.state("a_out")["position_pct"] == 100.0
    hx = plant.state("hx2")
    assert hx["inlet_temperature"] == plant.state("p2")["fluid_temperature"]
