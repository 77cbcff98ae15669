"""rank_root_causes: physics rules, memory recall, corrections, signature file errors, and the
root cause of every shared SKAB fault file (skipped without ../shared/data)."""

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
from plantcrew.detect.rules import Condition
from plantcrew.errors import ConfigError
from plantcrew.messages import Deviation
from plantcrew.scenarios.skab_eval import evaluate_skab
from tests.conftest import require_shared_data

# A SKAB-like pump at its operating point: baseline and noise scale (one z) per sensor.
PUMP = {
    "flow_rate": (125.0, 0.45),
    "pressure": (0.06, 0.22),
    "vibration_1": (0.21, 0.002),
    "vibration_2": (0.26, 0.002),
    "current": (2.5, 0.4),
    "voltage": (228.0, 10.0),
    "motor_temperature": (86.0, 0.3),
    "fluid_temperature": (29.0, 0.03),
}


def devs(**change: float) -> list[Deviation]:
    """Deviations of all eight sensors; ``change`` in the sensor's unit, z from PUMP's scale."""
    out = []
    for s, (base, scale) in PUMP.items():
        d = change.get(s, 0.0)
        z = d / scale
        out.append(
            Deviation(
                sensor=s, value=base + d, baseline=base, z=z, direction="up" if z >= 0 else "down"
            )
        )
    return out


def pct(sensor: str, p: float) -> float:
    """A change of ``p`` per cent of ``sensor``'s baseline, in its unit."""
    return PUMP[sensor][0] * p / 100


@pytest.fixture(scope="module")
def book():
    return load_signatures(default_signatures_path())


def top(book, deviations, lessons=None):
    return rank_root_causes(deviations, book, lessons or [])[0]


# ---- physics on synthetic deviations ------------------------------------------------------

CASES = [
    # (what, changes, cause)
    (
        "imbalance: vibration +40 %, hydraulics still",
        {
            "vibration_1": pct("vibration_1", 40),
            "vibration_2": pct("vibration_2", 30),
        },
        "rotor_imbalance",
    ),
    (
        "closed outlet: flow -40 %, pressure up 1 bar (4.5 sigma)",
        {
            "flow_rate": pct("flow_rate", -40),
            "pressure": 1.0,
            "current": -0.5,
        },
        "outlet_valve_closure",
    ),
    (
        "closed inlet (textbook): flow, pressure, current down",
        {
            "flow_rate": pct("flow_rate", -35),
            "pressure": -0.5,
            "current": -0.5,
            "motor_temperature": -0.5,
        },
        "inlet_valve_closure",
    ),
    (
        "throttled inlet (SKAB): flow -2 %, nothing else",
        {
            "flow_rate": pct("flow_rate", -2),
        },
        "inlet_valve_closure",
    ),
    (
        "unloaded motor cools 1.5 °C, flow within noise",
        {
            "motor_temperature": -1.5,
            "flow_rate": pct("flow_rate", -0.2),
        },
        "inlet_valve_closure",
    ),
    (
        "cavitation (SKAB): flow collapses -60 %, vibration +5 %",
        {
            "flow_rate": pct("flow_rate", -60),
            "vibration_1": pct("vibration_1", 5),
        },
        "cavitation",
    ),
    (
        "cavitation (textbook): flow -15 %, vibration x3",
        {
            "flow_rate": pct("flow_rate", -15),
            "pressure": -0.25,
            "vibration_1": pct("vibration_1", 200),
            "vibration_2": pct("vibration_2", 200),
        },
        "cavitation",
    ),
    (
        "addition: flow +2 % at the loop's temperature",
        {
            "flow_rate": pct("flow_rate", 2),
            "fluid_temperature": 0.01,
        },
        "fluid_leak_or_addition",
    ),
    (
        "more water: flow +1 %, loop 0.5 °C warmer",
        {
            "flow_rate": pct("flow_rate", 1),
            "fluid_temperature": 0.5,
        },
        "circuit_water_increase",
    ),
    (
        "hot water: loop +3 °C, flow +2 %",
        {
            "fluid_temperature": 3.0,
            "flow_rate": pct("flow_rate", 2),
        },
        "hot_water_supply",
    ),
    (
        "bearing: motor +5 °C, vibration_2 and current up",
        {
            "motor_temperature": 5.0,
            "vibration_2": pct("vibration_2", 9),
            "current": 0.3,
        },
        "bearing_overheating",
    ),
]


@pytest.mark.parametrize(("changes", "cause"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_physics_rules_name_the_fault(book, changes, cause):
    ranked = rank_root_causes(devs(**changes), book, [])
    assert ranked[0].root_cause == cause, [(c.root_cause, c.score) for c in ranked[:3]]
    assert ranked[0].score >= 0.5, "confident enough for the playbook (min_confidence 0.5)"
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    assert any(" z " in e for e in ranked[0].evidence), "evidence names the deviations"


def test_evidence_says_which_sensor_moved_which_way_and_how_much(book):
    best = top(book, devs(flow_rate=pct("flow_rate", -2)))
    assert "flow_rate down (1.00)" in best.evidence
    fact = next(e for e in best.evidence if e.startswith("flow_rate down 2.5"))
    assert "-2.0 %" in fact and "z -5.6" in fact and "vs baseline 125" in fact


def test_noise_is_not_evidence(book):
    """A thermocouple 3 sigma off but only 0.02 °C is physically still: no hot water."""
    assert top(book, devs(fluid_temperature=0.02)).root_cause == UNKNOWN
    assert top(book, devs()).root_cause == UNKNOWN


def test_a_flow_rise_is_never_a_valve_closure(book):
    ranked = rank_root_causes(devs(flow_rate=pct("flow_rate", 3), motor_temperature=-1.5), book)
    inlet = next(c for c in ranked if c.root_cause == "inlet_valve_closure")
    assert inlet.score == 0 and ranked[0].root_cause == "fluid_leak_or_addition"


def test_a_sensor_the_device_lacks_cannot_be_shown(book):
    no_vibration = [d for d in devs(flow_rate=pct("flow_rate", -60)) if "vibration" not in d.sensor]
    assert top(book, no_vibration).root_cause == "inlet_valve_closure"


def test_stuck_sensor_wins_on_a_flatline(book):
    d = devs(flow_rate=0.2)
    d[4] = Deviation(sensor="current", value=2.2, baseline=2.2, z=0.0, direction="flat")
    assert top(book, d).root_cause == "sensor_stuck"


def test_one_sensor_far_off_alone_is_a_drift(book):
    assert top(book, devs(pressure=2.5)).root_cause == "sensor_drift"


@pytest.mark.parametrize(
    ("text", "sensor", "direction", "amount", "z"),
    [
        ("flow_rate down", "flow_rate", "down", None, None),
        ("vibration_* up 30%", "vibration_*", "up", (0.3, True), None),
        ("fluid_temperature up 1.5", "fluid_temperature", "up", (1.5, False), None),
        ("pressure up z>=3", "pressure", "up", None, 3.0),
    ],
)
def test_condition_syntax(text, sensor, direction, amount, z):
    c = Condition.parse(text)
    assert (c.sensor, c.direction, c.z) == (sensor, direction, z)
    assert (None if c.amount is None else (c.amount.value, c.amount.relative)) == amount


# ---- memory -------------------------------------------------------------------------------


def test_confirmed_memory_names_what_physics_cannot():
    """A plant-specific signature no physics rule explains is learnt from one confirmation."""
    from plantcrew.detect import SignatureBook

    book = load_signatures(default_signatures_path())
    odd = {"voltage": -40.0, "current": 0.6}
    assert top(book, devs(**odd)).root_cause != "inlet_valve_closure"
    memory = LessonMemory()
    memory.confirm("inlet_valve_closure", devs(**odd))
    after = top(book, devs(voltage=-41.0, current=0.62), memory.lessons)
    assert after.root_cause == "inlet_valve_closure"
    assert any("recalls 1 confirmed" in e for e in after.evidence)
    assert isinstance(book, SignatureBook)


def test_confirmed_memory_does_not_overturn_a_clear_physics_match(book):
    """Leave-one-out safety: a roughly similar lesson of another cause loses to the physics."""
    dip = devs(flow_rate=pct("flow_rate", -2), vibration_1=pct("vibration_1", 1))
    collapse = devs(flow_rate=pct("flow_rate", -60), vibration_1=pct("vibration_1", 5))
    lessons = [Lesson(root_cause="cavitation", signature={d.sensor: d.z for d in collapse})]
    assert top(book, dip, lessons).root_cause == "inlet_valve_closure", "a dip is no collapse"
    near = devs(flow_rate=pct("flow_rate", -2.2), vibration_1=pct("vibration_1", 2))
    lessons = [Lesson(root_cause="outlet_valve_closure", signature={d.sensor: d.z for d in near})]
    assert top(book, dip, lessons).root_cause == "inlet_valve_closure"


def test_the_same_anomaly_seen_before_is_recalled(book):
    seen = devs(flow_rate=pct("flow_rate", -2), motor_temperature=0.3)
    lessons = [Lesson(root_cause="outlet_valve_closure", signature={d.sensor: d.z for d in seen})]
    assert top(book, seen).root_cause == "inlet_valve_closure"
    assert top(book, seen, lessons).root_cause == "outlet_valve_closure"


def test_correction_changes_a_later_diagnosis(book):
    imbalance = {"vibration_1": pct("vibration_1", 40), "vibration_2": pct("vibration_2", 35)}
    assert top(book, devs(**imbalance)).root_cause == "rotor_imbalance"
    memory = LessonMemory()
    memory.correct("cavitation", devs(**imbalance))
    later = {"vibration_1": pct("vibration_1", 42), "vibration_2": pct("vibration_2", 33)}
    best = top(book, devs(**later), memory.lessons)
    assert best.root_cause == "cavitation"
    assert any("feedback" in e for e in best.evidence)
    closed = {"flow_rate": pct("flow_rate", -40), "pressure": 1.0}
    assert top(book, devs(**closed), memory.lessons).root_cause == "outlet_valve_closure", (
        "recall is by similarity"
    )


def test_memory_round_trips_and_reports_bad_lines(tmp_path):
    memory = LessonMemory([Lesson(root_cause="cavitation", signature={"flow_rate": -3.0})])
    path = tmp_path / "lessons.jsonl"
    memory.save(path)
    assert LessonMemory.load(path).lessons == memory.lessons
    path.write_text(path.read_text() + "{not json}\n")
    with pytest.raises(ConfigError) as err:
        LessonMemory.load(path)
    assert err.value.line == 2


# ---- the signature file -------------------------------------------------------------------


def test_signature_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "signatures.yaml"
    bad.write_text(
        "signatures:\n"
        "  cavitation:\n"
        "    require: [flow_rate down]\n"
        "  rotor_imbalance:\n"
        "    require: [vibration_1 up]\n"
        "    prior: 3\n"
    )
    with pytest.raises(ConfigError) as err:
        load_signatures(bad)
    assert err.value.line == 6 and err.value.field == "signatures.rotor_imbalance.prior"
    cond = tmp_path / "cond.yaml"
    cond.write_text("signatures:\n  cavitation:\n    require: [flow_rate sideways]\n")
    with pytest.raises(ConfigError, match=r"SENSOR up\|down"):
        load_signatures(cond)
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("signatures:\n  a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"syntax\.yaml:"):
        load_signatures(syntax)


# ---- the shared SKAB fault files ----------------------------------------------------------

# valve2/0 (outlet closure) shows, for its first ~200 s, exactly what the valve1 files
# (inlet closure) show: flow -0.5 to -1 L/min, a silent pressure sensor (0.33 bar steps) and
# a cooling motor; no general rule tells them apart, and there is no other outlet file for
# memory to learn from. The README says so; the test keeps it visible.
NOT_SEPARABLE = {"valve2/0.csv": "inlet and outlet closure look alike on SKAB's sensors"}


@pytest.fixture(scope="module")
def skab_runs():
    data = require_shared_data() / "skab"
    plain = evaluate_skab([data])
    loo = evaluate_skab([data], leave_one_out=True)
    return plain, loo


def _judged(report):
    return [f for f in report.files if f.truth is not None]


@pytest.mark.parametrize("memory", ["none", "leave-one-out"])
def test_skab_root_cause_of_every_fault_file(skab_runs, memory):
    report = skab_runs[0] if memory == "none" else skab_runs[1]
    files = _judged(report)
    assert len(files) == 10, [f.name for f in files]
    wrong = {f.name: f.diagnosed for f in files if not f.correct and f.name not in NOT_SEPARABLE}
    assert wrong == {}, f"wrong root cause with memory={memory}: {wrong}"
    for f in files:
        if f.name in NOT_SEPARABLE:
            assert f.diagnosed == "inlet_valve_closure", (f.name, f.diagnosed)


def test_leave_one_out_memory_never_makes_a_right_physics_diagnosis_wrong(skab_runs):
    plain, loo = skab_runs
    for a, b in zip(_judged(plain), _judged(loo), strict=True):
        assert a.name == b.name
        assert not (a.correct and not b.correct), f"{a.name}: {a.diagnosed} -> {b.diagnosed}"


def test_skab_evidence_names_the_deviating_sensors(skab_runs):
    for f in _judged(skab_runs[0]):
        fault = next(i for i in f.incidents if i.root_cause == f.diagnosed)
        assert fault.confidence >= 0.5
        assert any(" z " in e and " vs baseline " in e for e in fault.evidence), fault.evidence


def test_a_version_1_pattern_book_still_loads_and_ranks(tmp_path):
    old = tmp_path / "signatures.yaml"
    old.write_text(
        "version: 1\n"
        "signatures:\n"
        "  cavitation:\n"
        "    sensors: {flow_rate: -1.0, vibration_1: 0.6}\n"
        "  rotor_imbalance:\n"
        "    sensors: {vibration_1: 1.0, vibration_2: 1.0}\n"
    )
    book = load_signatures(old)
    assert book.signatures["cavitation"].kind == "pattern"
    best = top(book, devs(vibration_1=pct("vibration_1", 40), vibration_2=pct("vibration_2", 40)))
    assert best.root_cause == "rotor_imbalance"


def test_condition_degrees(book):
    from plantcrew.detect.rules import degree

    scale = book.scale
    by = {d.sensor: d for d in devs(vibration_1=pct("vibration_1", 40))}
    assert degree(Condition.parse("vibration_* up 30%"), by, scale) == 1.0, "the strongest match"
    assert degree(Condition.parse("vibration_* steady"), by, scale) == 0.0, "all must hold still"
    assert degree(Condition.parse("vibration_2 steady"), by, scale) == 1.0
    assert degree(Condition.parse("vibration_1 down"), by, scale) == 0.0, "wrong direction"
    assert degree(Condition.parse("speed_pct up"), by, scale) is None, "no such sensor"
    half = {d.sensor: d for d in devs(fluid_temperature=1.125)}
    assert degree(Condition.parse("fluid_temperature up 1.5"), half, scale) == pytest.approx(0.5)
    zero = {
        "pressure": Deviation(sensor="pressure", value=1.0, baseline=0.0, z=5.0, direction="up")
    }
    assert degree(Condition.parse("pressure up 10%"), zero, scale) == 1.0, (
        "a relative amount is skipped at a zero baseline"
    )
