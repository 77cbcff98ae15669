"""rank_root_causes: physics signatures, memory recall, corrections, signature file errors."""

from __future__ import annotations

import pytest

from plantcrew.detect import (
    UNKNOWN,
    Lesson,
    LessonMemory,
    default_signatures_path,
    load_signatures,
    rank_root_causes,
)
from plantcrew.errors import ConfigError
from plantcrew.messages import Deviation

ALL_SENSORS = (
    "flow_rate",
    "pressure",
    "vibration_1",
    "vibration_2",
    "current",
    "voltage",
    "motor_temperature",
    "fluid_temperature",
)


def devs(**z: float) -> list[Deviation]:
    out = []
    for s in ALL_SENSORS:
        v = z.get(s, 0.0)
        out.append(
            Deviation(sensor=s, value=v, baseline=0.0, z=v, direction="up" if v >= 0 else "down")
        )
    return out


@pytest.fixture(scope="module")
def book():
    return load_signatures(default_signatures_path())


@pytest.mark.parametrize(
    ("pattern", "cause"),
    [
        ({"vibration_1": 40, "vibration_2": 35}, "rotor_imbalance"),
        ({"flow_rate": -8, "pressure": 6, "current": -2}, "outlet_valve_closure"),
        (
            {"flow_rate": -8, "pressure": -4, "current": -3, "motor_temperature": -3},
            "inlet_valve_closure",
        ),
        ({"flow_rate": -6, "pressure": -3, "vibration_1": 12, "vibration_2": 12}, "cavitation"),
        ({"fluid_temperature": 60, "flow_rate": 2}, "hot_water_supply"),
        ({"motor_temperature": 15, "vibration_2": 3, "current": 2}, "bearing_overheating"),
    ],
)
def test_physics_signatures_name_the_simulated_faults(book, pattern, cause):
    ranked = rank_root_causes(devs(**pattern), book, [])
    assert ranked[0].root_cause == cause
    assert 0 < ranked[0].score <= 1
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    assert any("sigma" in e for e in ranked[0].evidence), "evidence names the deviations"


def test_stuck_sensor_wins_on_a_flatline(book):
    d = devs(flow_rate=0.5)
    d[4] = Deviation(sensor="current", value=2.2, baseline=2.2, z=0.0, direction="flat")
    assert rank_root_causes(d, book, [])[0].root_cause == "sensor_stuck"


def test_nothing_deviating_is_unknown(book):
    ranked = rank_root_causes(devs(), book, [])
    assert ranked[0].root_cause == UNKNOWN


def test_confirmed_memory_recalls_a_plant_specific_signature(book):
    """A real plant's valve fault that does not look like the textbook one is learnt."""
    odd = {"flow_rate": -3.0, "motor_temperature": 4.0, "fluid_temperature": -2.0}
    before = rank_root_causes(devs(**odd), book, [])
    memory = LessonMemory()
    memory.confirm("inlet_valve_closure", devs(**odd))
    after = rank_root_causes(
        devs(flow_rate=-2.5, motor_temperature=3.5, fluid_temperature=-2.2), book, memory.lessons
    )
    assert before[0].root_cause != "inlet_valve_closure"
    assert after[0].root_cause == "inlet_valve_closure"
    assert any("recalls" in e for e in after[0].evidence)


def test_correction_changes_a_later_diagnosis(book):
    pattern = {"vibration_1": 20, "vibration_2": 18}
    assert rank_root_causes(devs(**pattern), book, [])[0].root_cause == "rotor_imbalance"
    memory = LessonMemory()
    memory.correct("cavitation", devs(**pattern))
    ranked = rank_root_causes(devs(vibration_1=22, vibration_2=17), book, memory.lessons)
    assert ranked[0].root_cause == "cavitation"
    dissimilar = rank_root_causes(devs(flow_rate=-8, pressure=6), book, memory.lessons)
    assert dissimilar[0].root_cause == "outlet_valve_closure", "recall is by similarity"


def test_memory_round_trips_and_reports_bad_lines(tmp_path):
    memory = LessonMemory([Lesson(root_cause="cavitation", signature={"flow_rate": -3.0})])
    path = tmp_path / "lessons.jsonl"
    memory.save(path)
    assert LessonMemory.load(path).lessons == memory.lessons
    path.write_text(path.read_text() + "{not json}\n")
    with pytest.raises(ConfigError) as err:
        LessonMemory.load(path)
    assert err.value.line == 2


def test_signature_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "signatures.yaml"
    bad.write_text(
        "signatures:\n"
        "  cavitation:\n"
        "    sensors: {flow_rate: -1}\n"
        "  rotor_imbalance:\n"
        "    kind: pattern\n"
        "    prior: 3\n"
    )
    with pytest.raises(ConfigError) as err:
        load_signatures(bad)
    assert err.value.line == 6 and err.value.field == "signatures.rotor_imbalance.prior"
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("signatures:\n  a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"syntax\.yaml:"):
        load_signatures(syntax)
