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
