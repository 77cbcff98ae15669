"""Plant and fault specs: the default plant, YAML-shaped input, errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from plantcrew.errors import ConfigError
from plantcrew.plant import FaultSpec, PlantSpec, PumpSpec, check_faults, default_plant

YAML = """
ambient_temperature_c: 20
devices:
  - {type: centrifugal_pump, id: p1, inlet_valve: vin, outlet_valve: vout, tank: t1,
     rated_flow_lpm: 200, motor: {rated_current_a: 4.0}}
  - {type: valve, id: vin, role: inlet}
  - {type: valve, id: vout, role: outlet, position_pct: 80}
  - {type: tank, id: t1, level_pct: 55}
  - {type: heat_exchanger, id: hx1}
"""


def _devices(**pump: Any) -> list[dict[str, Any]]:
    p = {"type": "centrifugal_pump", "id": "p1", "inlet_valve": "vin", "outlet_valve": "vout"}
    p.update(pump)
    return [
        p,
        {"type": "valve", "id": "vin", "role": "inlet"},
        {"type": "valve", "id": "vout", "role": "outlet"},
        {"type": "tank", "id": "t1"},
    ]


def test_default_plant_has_the_standard_devices() -> None:
    plant = default_plant()
    assert [(d.type, d.id) for d in plant.devices] == [
        ("centrifugal_pump", "pump1"),
        ("valve", "inlet_valve"),
        ("valve", "outlet_valve"),
        ("tank", "tank1"),
    ]
    pump = plant.device("pump1")
    assert isinstance(pump, PumpSpec) and pump.tank == "tank1"


def test_yaml_plant_parses_into_typed_devices() -> None:
    plant = PlantSpec.model_validate(yaml.safe_load(YAML))
    pump = plant.device("p1")
    assert isinstance(pump, PumpSpec)
    assert (pump.rated_flow_lpm, pump.motor.rated_current_a, pump.motor.voltage_v) == (
        200,
        4.0,
        230,
    )
    assert plant.pump_of(plant.device("hx1")).id == "p1"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pump", "field"),
    [
        ({"inlet_valve": "nope"}, "devices.0.inlet_valve"),
        ({"outlet_valve": "vin"}, "devices.0.outlet_valve"),  # wrong role
        ({"inlet_valve": "t1"}, "devices.0.inlet_valve"),  # not a valve
        ({"tank": "vin"}, "devices.0.tank"),
        ({"speed_pct": 150}, "speed_pct"),
        ({"colour": "red"}, "colour"),
        ({"id": "pump.1"}, "id"),
    ],
)
def test_plant_errors_name_the_field(pump: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        PlantSpec.model_validate({"devices": _devices(**pump)})
    assert field in str(info.value)


def test_duplicate_ids_and_shared_valves_are_refused() -> None:
    devices = _devices()
    devices.append({"type": "tank", "id": "t1"})
    with pytest.raises(ValidationError, match=r"devices\.4\.id"):
        PlantSpec.model_validate({"devices": devices})
    devices = _devices()
    devices.append(
        {"type": "centrifugal_pump", "id": "p2", "inlet_valve": "vin", "outlet_valve": "vout"}
    )
    with pytest.raises(ValidationError, match=r"devices\.4\.inlet_valve.*already piped"):
        PlantSpec.model_validate({"devices": devices})


def test_unknown_device_type_is_refused() -> None:
    with pytest.raises(ValidationError, match="compressor"):
        PlantSpec.model_validate({"devices": [{"type": "compressor", "id": "c1"}]})


def test_fault_spec_rules() -> None:
    f = FaultSpec.model_validate({"type": "cavitation", "device": "pump1", "at": 60})
    assert (f.severity, f.ramp_s, f.duration_s) == (1.0, 5.0, None)
    with pytest.raises(ValidationError, match="sensor"):
        FaultSpec(type="sensor_stuck", device="pump1", at=1)
    with pytest.raises(ValidationError, match="sensor"):
        FaultSpec(type="cavitation", device="pump1", at=1, sensor="flow_rate")
    with pytest.raises(ValidationError, match="severity"):
        FaultSpec(type="cavitation", device="pump1", at=1, severity=1.5)
    with pytest.raises(ValidationError, match="type"):
        FaultSpec.model_validate({"type": "meteor", "device": "pump1", "at": 1})


@pytest.mark.parametrize(
    ("fault", "field"),
    [
        ({"type": "cavitation", "device": "pump2"}, "faults.0.device"),
        ({"type": "cavitation", "device": "tank1"}, "faults.0.device"),
        ({"type": "inlet_valve_closure", "device": "outlet_valve"}, "faults.0.device"),
        ({"type": "sensor_drift", "device": "pump1", "sensor": "level_pct"}, "faults.0.sensor"),
    ],
)
def test_faults_are_checked_against_the_plant(fault: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_faults(default_plant(), [FaultSpec.model_validate({"at": 10, **fault})])
    assert info.value.field == field
    assert field in str(info.value)


def test_matching_faults_pass_the_check() -> None:
    check_faults(
        default_plant(),
        [
            FaultSpec(type="inlet_valve_closure", device="inlet_valve", at=1),
            FaultSpec(type="outlet_valve_closure", device="pump1", at=1),
            FaultSpec(type="sensor_stuck", device="tank1", sensor="level_pct", at=1),
        ],
    )
