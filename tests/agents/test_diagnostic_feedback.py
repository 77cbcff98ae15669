"""A person's correction (``plantcrew feedback``) changes the crew's later diagnoses."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.scenarios.runner import run_scenario
from plantcrew.store import Store

ROOT = Path(__file__).resolve().parents[2]


async def test_feedback_changes_the_next_run_of_the_same_fault(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'run.db'}"
    scenario = ROOT / "scenarios" / "rotor-imbalance.yaml"
    first = await run_scenario(scenario, db_url=db)
    assert [i["root_cause"] for i in first.incidents] == ["rotor_imbalance"]
    incident = Store(db).incidents(first.run_id)[0]
    res = CliRunner().invoke(
        app, ["feedback", incident.id, "--root-cause", "cavitation", "--db", db]
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "remembered as feedback" in res.stdout
    second = await run_scenario(scenario, db_url=db)
    assert [i["root_cause"] for i in second.incidents] == ["cavitation"], second.incidents


def test_a_correction_with_a_stuck_sensor_is_recalled_as_its_own_anomaly(tmp_path: Path) -> None:
    # an inlet valve closing while vibration_2 is stuck far from its baseline: a stuck sensor
    # is no evidence of the process fault, so recall leaves it out of the anomaly's pattern;
    # the correction must be stored the same way, or the same anomaly does not recall it
    from datetime import UTC, datetime

    from plantcrew.detect import default_signatures_path, load_signatures, signature_of
    from plantcrew.detect.diagnosis import rank_root_causes
    from plantcrew.detect.signatures import Lesson as MemoryLesson
    from plantcrew.store import Incident, Run
    from tests.detect.test_diagnosis import devs, pct

    seen = [
        d if d.sensor != "vibration_2" else d.model_copy(update={"z": 6.0, "direction": "flat"})
        for d in devs(flow_rate=pct("flow_rate", -8), current=pct("current", -4))
    ]
    db = f"sqlite:///{tmp_path / 'run.db'}"
    store = Store(db)
    with store.tx() as s:
        s.add(Run(id="r1", started_at=datetime.now(UTC)))
        s.add(
            Incident(
                id="inc-1",
                run_id="r1",
                device_id="pump1",
                root_cause="sensor_stuck",
                outcome="escalated",
                anomaly={"deviations": [d.model_dump(mode="json") for d in seen]},
            )
        )
    res = CliRunner().invoke(
        app, ["feedback", "inc-1", "--root-cause", "inlet_valve_closure", "--db", db]
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    (stored,) = Store(db).lessons()
    assert stored.signature == signature_of(seen)
    lesson = MemoryLesson(
        root_cause=stored.root_cause,
        signature=stored.signature,
        weight=stored.weight,
        source="feedback",
    )
    ranked = rank_root_causes(seen, load_signatures(default_signatures_path()), [lesson])
    assert ranked[0].root_cause == "inlet_valve_closure"
    assert "best similarity 1.00" in ranked[0].evidence[0]


VALVE_WITH_STUCK_VOLTAGE = """\
name: valve-with-stuck-voltage
description: the inlet valve closes while the voltage sensor is stuck for 150 s
seed: 11
duration_s: 1400
faults:
  - {type: inlet_valve_closure, device: inlet_valve, at: 500, ramp_s: 10}
  - {type: sensor_stuck, device: pump1, sensor: voltage, at: 480, duration_s: 150}
expect:
  incidents: 1
"""


async def test_lessons_of_an_incident_with_a_stuck_sensor_leave_it_out(tmp_path: Path) -> None:
    # the crew reads it as a stuck sensor; a person says inlet valve; the same fault then
    # recalls that correction, is resolved and confirmed: both lessons (feedback's and the
    # Coordinator's) store the signature recall builds for the anomaly, without the stuck sensor
    from plantcrew.detect import signature_of

    scenario = tmp_path / "valve-with-stuck-voltage.yaml"
    scenario.write_text(VALVE_WITH_STUCK_VOLTAGE, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'run.db'}"
    first = await run_scenario(scenario, db_url=db)
    (incident,) = Store(db).incidents(first.run_id)
    assert incident.root_cause == "sensor_stuck"
    flat = [d["sensor"] for d in incident.anomaly["deviations"] if d["direction"] == "flat"]
    assert flat == ["voltage"]
    res = CliRunner().invoke(
        app, ["feedback", incident.id, "--root-cause", "inlet_valve_closure", "--db", db]
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    second = await run_scenario(scenario, db_url=db)
    (again,) = Store(db).incidents(second.run_id)
    assert (again.root_cause, again.outcome) == ("inlet_valve_closure", "resolved")
    lessons = {les.source: les.signature for les in Store(db).lessons()}
    assert lessons == {
        "feedback": signature_of(incident.anomaly["deviations"]),
        "confirmed": signature_of(again.anomaly["deviations"]),
    }
    assert "voltage" not in lessons["confirmed"]
