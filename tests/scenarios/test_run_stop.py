"""``run_scenario(stop=...)``: how ``plantcrew serve --scenario`` ends its in-process run on
SIGTERM. The run ends at the end of the step under way (a paced wait is cut short), its crew
stops, and it is recorded ``interrupted`` at that plant time, even for a CSV replay (whose
``passed``/``failed`` would otherwise be judged on the rows replayed so far); ``resume``
continues it.

Real crew on the memory bus and a SQLite file; the historian CSV replay of scenarios/.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from plantcrew.scenarios.runner import run_scenario
from plantcrew.store import Store
from tests.conftest import ROOT

HISTORIAN = ROOT / "scenarios" / "historian-export.yaml"


def test_a_stopped_csv_replay_is_interrupted_and_resumes_to_its_verdict(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'stop.db'}"
    stop = asyncio.Event()

    def people(t: float) -> None:
        if t >= 120:
            stop.set()

    first = asyncio.run(
        run_scenario(HISTORIAN, bus_url="memory://", db_url=db_url, people=people, stop=stop)
    )
    store = Store(db_url)
    try:
        run = store.get_run(first.run_id)
        assert run.status == "interrupted", run.status
        assert 120 <= run.plant_time < 200, run.plant_time
        again = asyncio.run(run_scenario(HISTORIAN, db_url=db_url, resume=first.run_id, bus_url=""))
        assert again.passed, [e for e in again.expectations if not e.passed]
        assert store.get_run(first.run_id).status == "passed"
    finally:
        store.dispose()


def test_stop_cuts_a_paced_wait_short(tmp_path: Path) -> None:
    """At 0.01 plant s per wall s each 1 s row of the replay waits 100 s; the stop cuts it."""

    async def main() -> tuple[float, str]:
        stop = asyncio.Event()
        runner = asyncio.create_task(
            run_scenario(
                HISTORIAN,
                bus_url="memory://",
                db_url=f"sqlite:///{tmp_path / 'paced.db'}",
                pace=0.01,
                stop=stop,
            )
        )
        await asyncio.sleep(3)  # the crew started; the run waits for its second row
        assert not runner.done()
        t0 = time.monotonic()
        stop.set()
        result = await asyncio.wait_for(runner, 30)
        return time.monotonic() - t0, result.run_id

    took, run_id = asyncio.run(main())
    assert took < 5, f"{took:.1f} s from stop to the run's end"
    store = Store(f"sqlite:///{tmp_path / 'paced.db'}")
    try:
        assert store.get_run(run_id).status == "interrupted"
    finally:
        store.dispose()
