"""A task result is checked against the incident as its Coordinator last wrote it, not read
(plantcrew.crews.known): real Coordinators on SQLite and PostgreSQL, the database staying the
truth when another Coordinator (another process) changed the incident meanwhile."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from structlog.testing import capture_logs

from plantcrew.bus import Bus, connect
from plantcrew.crews.batched_relay import BatchedOutboxRelay
from plantcrew.crews.group_commit import GroupCommit
from plantcrew.messages import AnomalyDetected, Deviation, Diagnosis, Message
from plantcrew.plant.clock import SimClock
from plantcrew.store import Store
from tests.crews.test_approval_path import INC, anomaly, answer, coordinator, event

Env = tuple[Bus, Store, SimClock]


@pytest.fixture
async def env(db_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    bus, store = await connect(f"memory://known-{tmp_path.name}"), Store(db_url)
    yield bus, store, SimClock()
    store.dispose()
    await bus.close()


def diagnosis(clock: SimClock) -> Message:
    return answer(clock, Diagnosis, "diagnose", "diagnostic-1", root_cause="leak", confidence=0.8)


def on_other_device(clock: SimClock) -> Message:
    dev = Deviation(sensor="flow_rate", value=100, baseline=125, z=-12, direction="down")
    payload = AnomalyDetected(device_id="pump2", score=0.99, ts=clock.t, deviations=[dev])
    return event(clock, payload, "monitor-1", correlation_id="r1")


def incident_reads(store: Store, apply: Any) -> list[str]:
    """The statements reading the incident table while ``apply()`` runs."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if re.search(r"^\s*SELECT\b.*\bFROM incident\b", sql, re.S):
            seen.append(sql)

    sa_event.listen(store.engine, "before_cursor_execute", before)
    try:
        apply()
    finally:
        sa_event.remove(store.engine, "before_cursor_execute", before)
    return seen


async def test_a_result_is_applied_without_reading_its_incident(env: Env) -> None:
    bus, store, clock = env
    coord = coordinator(bus, store, clock)
    assert coord.apply_event(anomaly(clock))
    assert incident_reads(store, lambda: coord.apply_event(diagnosis(clock))) == []
    inc = store.get_incident(INC)
    assert (inc.status, inc.root_cause, inc.version) == ("proposing", "leak", 3)


async def test_an_incident_another_coordinator_changed_is_read_again(env: Env) -> None:
    bus, store, clock = env
    mine, other = coordinator(bus, store, clock), coordinator(bus, store, clock)
    assert mine.apply_event(anomaly(clock))
    # another process applies a repeated anomaly on the device: same task, a newer version
    assert other.apply_event(anomaly(clock))
    with capture_logs() as logs:
        assert mine.apply_event(diagnosis(clock))  # its known copy was stale: applied again
    assert [e["event"] for e in logs] == ["incident changed elsewhere: event applied again"]
    inc = store.get_incident(INC)
    assert (inc.status, inc.data["anomalies"], inc.version) == ("proposing", 2, 4)


async def test_a_group_commit_with_a_stale_incident_applies_its_events_one_by_one(
    env: Env,
) -> None:
    bus, store, clock = env
    mine, other = coordinator(bus, store, clock), coordinator(bus, store, clock)
    assert mine.apply_event(anomaly(clock))
    assert other.apply_event(anomaly(clock))
    group = GroupCommit(store, BatchedOutboxRelay(store, bus).publish_rows, None, max_open=1)
    # a batch of two: the stale incident fails it, then each event commits alone
    batch = [diagnosis(clock), on_other_device(clock)]
    assert await asyncio.gather(*(group.apply(mine, m) for m in batch)) == [True, True]
    assert group.batches == 0  # no batch committed: the events went one by one
    assert store.get_incident(INC).status == "proposing"
    assert {i.device_id for i in store.incidents("r1")} == {"pump1", "pump2"}


async def test_what_a_rolled_back_transaction_wrote_is_not_known(env: Env) -> None:
    bus, store, clock = env
    coord = coordinator(bus, store, clock)
    assert coord.apply_event(anomaly(clock))
    with pytest.raises(RuntimeError), store.tx() as s:
        assert coord.apply_in(s, diagnosis(clock))
        known = coord.known.get(s, INC)  # the transaction sees what it wrote
        assert known is not None and known.status == "proposing"
        raise RuntimeError("rolled back")
    with store.tx() as s:
        known = coord.known.get(s, INC)
    assert known is not None and (known.status, known.version) == ("diagnosing", 2)
    assert incident_reads(store, lambda: coord.apply_event(diagnosis(clock))) == []
    assert store.get_incident(INC).version == 3
