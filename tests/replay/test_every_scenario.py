"""A recorded run of every scenario in scenarios/ replays with --verify and no divergence.

Two runs per scenario (record, re-execute): the slowest file of this folder (about 10 s per
scenario). Whether a scenario's own expectations pass does not matter here: the record is
what is verified.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plantcrew.replay.verify import verify_run_async
from plantcrew.scenarios.runner import run_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def test_there_are_scenarios_to_verify() -> None:
    assert len(SCENARIOS) >= 6


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_a_recorded_run_of_the_scenario_verifies(path: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    result = await run_scenario(path, db_url=url)
    report = await verify_run_async(url, result.run_id)
    assert report.ok, "; ".join(
        [d.describe() for d in report.divergences]
        + report.action_differences
        + report.reexecution.unrecorded
        + report.reexecution.unused
    )
    assert report.compared > 0 and report.replayed == report.compared
