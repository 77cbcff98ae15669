"""The Coordinator process is killed (SIGKILL) in the middle of an incident, with an event it
was applying not yet committed nor acknowledged; a new Coordinator process takes over and the
run loses nothing: it passes, the action is executed once, no incident is left active, the
audit chain verifies and nothing is dead-lettered.

The crew: ``plantcrew coordinator`` and one ``plantcrew worker`` with every role, on the
machine's broker (a fresh namespace) and PostgreSQL (a fresh schema); the run is
``short-bearing`` with the crew remote (its stop of ``pump1`` waits for a person's approval).

The moment is made, not raced: before the run the test locks the ``action`` table (EXCLUSIVE:
others may read it, no one may write it), so the Coordinator's transaction of the Operator's
``action.proposed`` (the incident is diagnosed, its action not yet recorded) waits in
PostgreSQL. The test sees that wait (``pg_blocking_pids``), kills the Coordinator, lets the
lock go (the dead process's transaction never commits) and starts another Coordinator, which
gets the event again from the broker once its ack wait passed.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from plantcrew.crews.coordinator import ACTIVE
from plantcrew.scenarios.runner import run_scenario
from plantcrew.store import Store
from tests.conftest import bus_url_for
from tests.distributed.conftest import FAULT_BROKERS, Crew, crew_of, new_schema
from tests.distributed.test_crew import SHORT, gateway_counts, settled
from tests.distributed.test_worker_stop import until

WORKER = (
    "worker", "--role", "monitor", "--role", "diagnostic", "--role", "operator",
    "--role", "safety", "--role", "reviewer", "--grace", "2",
)  # fmt: skip
WAIT_S = 120.0  # the longest the test waits for any one thing


def waiting_on(lock: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    """The backends waiting for a lock ``lock``'s session holds: (pid, query) each."""
    lock.execute("SELECT pg_stat_clear_snapshot()")  # else one view per transaction
    rows = lock.execute(
        "SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
        (lock.info.backend_pid,),
    ).fetchall()
    return [(int(pid), str(query)) for pid, query in rows]


async def until_blocked(lock: psycopg.Connection[Any], run: asyncio.Task[Any]) -> str:
    """Wait until a backend waits for ``lock``'s lock; returns its query."""
    blocked: list[tuple[int, str]] = []

    def check() -> bool:
        if run.done():
            run.result()  # the run's error, if it failed
            raise AssertionError("the run ended before the Coordinator wrote the action")
        # the lock's session is only used here, one call at a time: no thread needed
        blocked[:] = waiting_on(lock)
        return bool(blocked)

    await until("a backend waits for the lock", check, WAIT_S)
    return blocked[0][1]


@pytest.fixture(scope="module")
def slow_beats(crew_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test config with crew.yaml's own heartbeats (every 5 s, live for 30 s): a new
    Coordinator hears of an agent from its periodic heartbeat only every 5 s."""
    dest = tmp_path_factory.mktemp("slow-beats") / "config"
    shutil.copytree(crew_config, dest)
    crew = yaml.safe_load((dest / "crew.yaml").read_text())
    crew["heartbeat_interval_s"], crew["coordinator"]["agent_ttl_s"] = 5, 30
    (dest / "crew.yaml").write_text(yaml.safe_dump(crew))
    return dest


@pytest.mark.parametrize("broker", FAULT_BROKERS)
async def test_a_coordinator_killed_mid_event_is_replaced_and_the_run_loses_nothing(
    broker: str,
    slow_beats: Path,
    pg_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handled = gateway_counts(monkeypatch)
    bus_url, db_url = bus_url_for(broker), new_schema(pg_database)
    with crew_of(bus_url, db_url, slow_beats, tmp_path / "logs", ("coordinator",), WORKER) as crew:
        first = crew.processes[0]
        lock = psycopg.connect(db_url)  # the crew's processes made the schema
        try:
            lock.execute("LOCK TABLE action IN EXCLUSIVE MODE")
            run = asyncio.create_task(
                run_scenario(
                    SHORT, bus_url=bus_url, db_url=db_url, config_dir=slow_beats, crew="remote"
                )
            )
            query = await until_blocked(lock, run)
            assert "action" in query.lower(), query
            store = Store(db_url)
            try:
                (inc,) = store.incidents()
                assert inc.status == "proposing" and inc.root_cause, (inc.status, inc.root_cause)
                assert store.actions() == []
                assert not [m for m in store.messages(inc.run_id) if m.type == "action.proposed"]
            finally:
                store.dispose()
            first.kill()  # its transaction of action.proposed never commits
        finally:
            lock.close()  # rolls back: the table is free again
        # back after the event's ack wait, as one its orchestrator restarts a while later: the
        # broker hands the event to the new Coordinator as soon as it asks for events
        await asyncio.sleep(ack_wait_s(slow_beats))
        second = crew.spawn("coordinator")
        await asyncio.to_thread(second.wait_ready)
        result = await asyncio.wait_for(run, timeout=WAIT_S * 2)
        failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.passed]
        assert result.passed, "; ".join(failed) + "\n" + second.tail()
        await settled(bus_url)
        check_nothing_lost(crew, result.run_id)
    # the plant carried the command out once, and heard it once
    assert handled == [{"executed": 1}]


def ack_wait_s(config_dir: Path) -> float:
    """The crew's ack wait (crew.yaml ``delivery.ack_wait_s``), seconds."""
    crew = yaml.safe_load((config_dir / "crew.yaml").read_text())
    return float(crew["delivery"]["ack_wait_s"])


def check_nothing_lost(crew: Crew, run_id: str) -> None:
    """Every incident of the run closed, its one action executed once, each event recorded
    once, the audit chain whole, no dead letter."""
    store = Store(crew.db_url)
    try:
        incidents = store.incidents(run_id)
        assert incidents and [i.status for i in incidents if i.status in ACTIVE] == []
        actions = store.actions(run_id=run_id)
        assert [(a.command, a.status) for a in actions] == [("stop", "executed")]
        kinds = [m.type for m in store.messages(run_id)]
        for kind in ("diagnosis.made", "action.proposed", "safety.decided", "action.executed"):
            assert kinds.count(kind) == 1, (kind, kinds)
        assert store.verify_audit() == []
        assert store.dead_letters() == []
    finally:
        store.dispose()
