"""Each fault leaves its contracted signature, and each corrective action relieves it."""

from __future__ import annotations

import statistics

import pytest

from plantcrew.plant import SIGNATURES, FaultSpec, FaultType, activation

from .helpers import NOISE_SD, PUMP_SENSORS, make_plant, record, robust_z, values

AT = 300.0
BASELINE = (AT - 120.0, AT)  # the last two minutes before onset
WINDOW = (AT + 10.0, AT + 25.0)  # the contract: visible within ~10-20 s of onset

# The contract from the brief, written out independently of plantcrew.plant.faults.
EXPECTED = {
    FaultType.CAVITATION: ({"vibration_1", "vibration_2"}, {"flow_rate", "pressure", "current"}),
    FaultType.INLET_VALVE_CLOSURE: (
        set(),
        {"flow_rate", "pressure", "current", "motor_temperature"},
    ),
    FaultType.OUTLET_VALVE_CLOSURE: ({"pressure"}, {"flow_rate", "current"}),
    FaultType.ROTOR_IMBALANCE: ({"vibration_1", "vibration_2"}, set()),
    FaultType.BEARING_OVERHEATING: ({"motor_temperature", "vibration_2", "current"}, set()),
    FaultType.SENSOR_STUCK: (set(), set()),
    FaultType.SENSOR_DRIFT: (set(), set()),
}
PROCESS_FAULTS = [f for f in FaultType if f not in (FaultType.SENSOR_STUCK, FaultType.SENSOR_DRIFT)]


def test_published_signatures_match_the_contract() -> None:
    assert set(SIGNATURES) == set(FaultType)
    for kind, (up, down) in EXPECTED.items():
        assert (set(SIGNATURES[kind].up), set(SIGNATURES[kind].down)) == (up, down), kind
        assert not (SIGNATURES[kind].steady & (up | down))


def test_activation_ramps_in_and_ends() -> None:
    f = FaultSpec(
        type="rotor_imbalance", device="pump1", at=10, severity=0.5, ramp_s=10, duration_s=30
    )
    assert [activation(f, t) for t in (9.9, 10, 15, 20, 39.9, 40)] == [0, 0, 0.25, 0.5, 0.5, 0]


@pytest.mark.parametrize("kind", PROCESS_FAULTS)
def test_process_fault_signature(kind: FaultType) -> None:
    plant = make_plant([FaultSpec(type=kind, device="pump1", at=AT)])
    pump = record(plant, AT + 30)["pump1"]
    sig = SIGNATURES[kind]
    for sensor in PUMP_SENSORS:
        z = robust_z(
            values(pump[sensor], *WINDOW), values(pump[sensor], *BASELINE), NOISE_SD[sensor]
        )
        if sensor in sig.up:
            assert z > 5, (sensor, z)
        elif sensor in sig.down:
            assert z < -5, (sensor, z)
        elif sensor in sig.steady:
            assert abs(z) < 3.5, (sensor, z)


@pytest.mark.parametrize(
    ("kind", "valve"),
    [
        (FaultType.INLET_VALVE_CLOSURE, "inlet_valve"),
        (FaultType.OUTLET_VALVE_CLOSURE, "outlet_valve"),
    ],
)
def test_valve_closure_shows_on_the_valve(kind: FaultType, valve: str) -> None:
    plant = make_plant([FaultSpec(type=kind, device="pump1", at=AT)])
    data = record(plant, AT + 30)
    position = values(data[valve]["position_pct"], *WINDOW)
    assert statistics.median(position) == pytest.approx(15.0, abs=0.5)
    other = "outlet_valve" if valve == "inlet_valve" else "inlet_valve"
    assert statistics.median(values(data[other]["position_pct"], *WINDOW)) > 99


def test_fault_on_the_valve_itself_acts_like_on_its_pump() -> None:
    by_pump = record(
        make_plant([FaultSpec(type="inlet_valve_closure", device="pump1", at=AT)]), AT + 30
    )
    by_valve = record(
        make_plant([FaultSpec(type="inlet_valve_closure", device="inlet_valve", at=AT)]), AT + 30
    )
    assert by_pump == by_valve


def test_severity_scales_the_effect() -> None:
    def flow_drop(severity: float) -> float:
        plant = make_plant([FaultSpec(type="cavitation", device="pump1", at=AT, severity=severity)])
        flow = record(plant, AT + 30)["pump1"]["flow_rate"]
        return statistics.median(values(flow, *BASELINE)) - statistics.median(values(flow, *WINDOW))

    weak, strong = flow_drop(0.3), flow_drop(1.0)
    assert 0 < weak < strong
    assert 0.10 * 125 <= strong <= 0.30 * 125  # the contract: flow down 10-30 %


@pytest.mark.parametrize(
    ("kind", "sensor"),
    [
        (FaultType.SENSOR_STUCK, "flow_rate"),
        (FaultType.SENSOR_STUCK, "motor_temperature"),
        (FaultType.SENSOR_DRIFT, "pressure"),
        (FaultType.SENSOR_DRIFT, "vibration_1"),
    ],
)
def test_sensor_fault_touches_only_its_sensor(kind: FaultType, sensor: str) -> None:
    plant = make_plant([FaultSpec(type=kind, device="pump1", sensor=sensor, at=AT)])
    pump = record(plant, AT + 30)["pump1"]
    if kind is FaultType.SENSOR_STUCK:
        last_before = values(pump[sensor], AT - 2, AT - 1)
        after = [v for ts, v in pump[sensor] if ts >= AT]
        assert len(set(after)) == 1 and after[0] == last_before[0]
    else:
        z = robust_z(
            values(pump[sensor], *WINDOW), values(pump[sensor], *BASELINE), NOISE_SD[sensor]
        )
        assert z > 5, z
    for other in PUMP_SENSORS:
        if other != sensor:
            z = robust_z(
                values(pump[other], *WINDOW), values(pump[other], *BASELINE), NOISE_SD[other]
            )
            assert abs(z) < 3.5, (other, z)


def test_stuck_sensor_recovers_after_its_duration() -> None:
    plant = make_plant(
        [FaultSpec(type="sensor_stuck", device="pump1", sensor="current", at=AT, duration_s=20)]
    )
    current = record(plant, AT + 60)["pump1"]["current"]
    assert len(set(values(current, AT - 1, AT + 19))) == 1
    assert len(set(values(current, AT + 20, AT + 60))) == 40


# ---- relief -------------------------------------------------------------------------------

RELIEF_AT = AT + 30
SETTLE = 900.0  # 6 motor thermal time constants: what the fault did to temperatures fades


def _after_relief(
    kind: FaultType, commands: list[tuple[str, str, dict[str, float]]], settle: float = SETTLE
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Pump readings in the last minute of ``settle`` after ``commands``, for a faulty plant
    and for a fault-free one that got the same commands at the same time (same seed, so the
    same noise: any difference is the fault's)."""
    out = []
    for faults in ([FaultSpec(type=kind, device="pump1", at=AT)], []):
        plant = make_plant(faults)
        end = RELIEF_AT + settle
        plant.replay_to(end - 60, [(RELIEF_AT, *c) for c in commands])
        pump = record(plant, 60)["pump1"]
        out.append({s: values(pump[s], end - 60, end) for s in PUMP_SENSORS})
    return out[0], out[1]


RELIEFS = [
    (FaultType.CAVITATION, [("pump1", "set_speed", {"speed_pct": 85})]),
    (FaultType.CAVITATION, [("pump1", "stop", {})]),
    (FaultType.INLET_VALVE_CLOSURE, [("inlet_valve", "set_position", {"position_pct": 100})]),
    (FaultType.OUTLET_VALVE_CLOSURE, [("outlet_valve", "set_position", {"position_pct": 100})]),
    (FaultType.ROTOR_IMBALANCE, [("pump1", "stop", {})]),
    (FaultType.BEARING_OVERHEATING, [("pump1", "stop", {})]),
    (FaultType.BEARING_OVERHEATING, [("pump1", "set_speed", {"speed_pct": 50})]),
]


@pytest.mark.parametrize(("kind", "commands"), RELIEFS)
def test_relief_returns_readings_to_the_fault_free_operating_point(
    kind: FaultType, commands: list[tuple[str, str, dict[str, float]]]
) -> None:
    faulty, healthy = _after_relief(kind, commands)
    for sensor in PUMP_SENSORS:
        diff = statistics.median(faulty[sensor]) - statistics.median(healthy[sensor])
        assert abs(diff) < 3 * NOISE_SD[sensor], (sensor, diff)


def test_relieved_cavitation_follows_the_affinity_laws() -> None:
    faulty, _ = _after_relief(FaultType.CAVITATION, [("pump1", "set_speed", {"speed_pct": 80})])
    assert statistics.median(faulty["flow_rate"]) == pytest.approx(0.8 * 125, abs=1.0)
    assert statistics.median(faulty["pressure"]) == pytest.approx(0.64 * 1.0, abs=0.02)


def test_cavitation_persists_above_85_percent() -> None:
    faulty, healthy = _after_relief(
        FaultType.CAVITATION, [("pump1", "set_speed", {"speed_pct": 90})], settle=60
    )
    assert statistics.median(faulty["vibration_1"]) > 3 * statistics.median(healthy["vibration_1"])


def test_opening_valves_does_not_relieve_rotor_imbalance() -> None:
    faulty, healthy = _after_relief(
        FaultType.ROTOR_IMBALANCE,
        [
            ("inlet_valve", "set_position", {"position_pct": 100}),
            ("outlet_valve", "set_position", {"position_pct": 100}),
        ],
        settle=60,
    )
    for sensor in ("vibration_1", "vibration_2"):
        assert statistics.median(faulty[sensor]) > 3 * statistics.median(healthy[sensor])


def test_rotor_imbalance_falls_with_the_square_of_speed() -> None:
    at_full, _ = _after_relief(FaultType.ROTOR_IMBALANCE, [], settle=60)
    at_half, _ = _after_relief(
        FaultType.ROTOR_IMBALANCE, [("pump1", "set_speed", {"speed_pct": 50})], settle=60
    )
    ratio = statistics.median(at_half["vibration_1"]) / statistics.median(at_full["vibration_1"])
    assert ratio == pytest.approx(0.25, abs=0.02)


def test_bearing_temperature_decays_after_stop() -> None:
    plant = make_plant([FaultSpec(type="bearing_overheating", device="pump1", at=AT)])
    plant.run(AT + 300)
    hot = plant.state("pump1")["motor_temperature"]
    plant.apply("pump1", "stop", {})
    plant.run(120)
    cooler = plant.state("pump1")["motor_temperature"]
    assert hot > 95 and cooler < hot - 20


def test_a_later_valve_command_relieves_but_an_earlier_one_does_not() -> None:
    plant = make_plant([FaultSpec(type="outlet_valve_closure", device="pump1", at=AT)])
    plant.run(AT - 10)
    plant.apply("outlet_valve", "set_position", {"position_pct": 100})
    plant.run(40)
    assert plant.state("outlet_valve")["position_pct"] == pytest.approx(15.0)
    plant.apply("outlet_valve", "set_position", {"position_pct": 100})
    plant.run(10)
    assert plant.state("outlet_valve")["position_pct"] == pytest.approx(100.0)
