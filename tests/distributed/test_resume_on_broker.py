"""A local run (the crew in the runner's process) resumed on a broker takes the event its
stopped predecessor left on ``crew.events``, unacknowledged, before its own agents' first
heartbeats came back over the broker; the run's Coordinator must route that event's step to
those agents, not hand the incident to a person ("no live agent can diagnose").

The moment is made, not raced: ``short-bearing`` runs with the crew local on the machine's
NATS (a fresh namespace) up to just before its Monitor detects the overheating bearing, then
stops; the test puts on ``crew.events`` the ``anomaly.detected`` that Monitor would have
published (the one of the same scenario, same seed, run whole on the in-memory bus) and
resumes the run, which finds it waiting.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from plantcrew.bus import connect
from plantcrew.messages import Message, Subjects
from plantcrew.scenarios.runner import run_scenario
from plantcrew.store import Store
from tests.conftest import bus_url_for
from tests.distributed.test_crew import SHORT


def detection(db_url: str, run_id: str) -> tuple[Message, float]:
    """The run's ``anomaly.detected`` and its plant time (seconds since the run started)."""
    store = Store(db_url)
    try:
        started = store.get_run(run_id).started_at
        (row,) = store.messages(run_id, types=["anomaly.detected"])
        msg = Message.from_bytes(row.body)
    finally:
        store.dispose()
    return msg, (msg.time - started.replace(tzinfo=msg.time.tzinfo)).total_seconds()


def started_at(db_url: str, run_id: str) -> datetime:
    """When the run started (its plant time 0)."""
    store = Store(db_url)
    try:
        return store.get_run(run_id).started_at
    finally:
        store.dispose()


async def test_a_local_run_resumed_on_a_broker_routes_the_event_left_waiting(
    tmp_path: Path,
) -> None:
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    reference = await run_scenario(SHORT, bus_url="memory://", db_url=whole)
    assert reference.passed
    detected, at = detection(whole, reference.run_id)

    bus_url, db_url = bus_url_for("nats"), f"sqlite:///{tmp_path / 'resumed.db'}"
    first = await run_scenario(SHORT, bus_url=bus_url, db_url=db_url, stop_after_s=at - 1)
    store = Store(db_url)
    try:
        assert store.incidents(first.run_id) == []  # nothing detected yet
    finally:
        store.dispose()
    # what the stopped run's Monitor published as it stopped, its Coordinator never took
    start = started_at(db_url, first.run_id).replace(tzinfo=detected.time.tzinfo)
    left = Message.new(
        detected.payload,
        source=detected.source,
        subject=Subjects.EVENTS,
        run_id=first.run_id,
        time=start + timedelta(seconds=at - 1),
    )
    bus = await connect(bus_url)
    try:
        await bus.publish(left)
    finally:
        await bus.close()

    result = await run_scenario(SHORT, bus_url=bus_url, db_url=db_url, resume=first.run_id)
    store = Store(db_url)
    try:
        incidents = store.incidents(first.run_id)
    finally:
        store.dispose()
    assert [(i.status, i.escalation_reason) for i in incidents] == [("resolved", None)]
    failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.passed]
    assert result.passed, "; ".join(failed)
