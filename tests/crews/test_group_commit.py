"""Group commit (in-process bus, SQLite): the events that arrive while a transaction is open
share the next one; each is applied once, its messages are published after the commit, and
an event that fails does not take the others with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from plantcrew.bus import Bus, connect
from plantcrew.crews import Coordinator, CoordinatorSettings
from plantcrew.crews.batched_relay import BatchedOutboxRelay
from plantcrew.crews.group_commit import GroupCommit
from plantcrew.messages import (
    AgentHeartbeat,
    AnomalyDetected,
    Capability,
    Deviation,
    Message,
    Subjects,
)
from plantcrew.plant.clock import SimClock
from plantcrew.store import Store

SETTINGS = CoordinatorSettings(task_timeout_s=60, max_attempts=3, agent_ttl_s=30)


class FaultyCoordinator(Coordinator):
    """A Coordinator whose handler breaks on one device's events (a bug in a handler)."""

    def handle_in(self, s: Session, msg: Message) -> None:
        if isinstance(msg.payload, AnomalyDetected) and msg.payload.device_id == "broken":
            raise RuntimeError("handler bug")
        super().handle_in(s, msg)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Bus, Store, SimClock]]:
    bus = await connect(f"memory://group-{tmp_path.name}")
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    yield bus, store, SimClock()
    store.dispose()
    await bus.close()


def anomaly(clock: SimClock, device: str) -> Message:
    dev = Deviation(sensor="flow_rate", value=100, baseline=125, z=-12, direction="down")
    return Message.new(
        AnomalyDetected(device_id=device, score=0.99, ts=clock.t, deviations=[dev]),
        source="monitor-1",
        subject=Subjects.EVENTS,
        time=clock.now(),
        run_id="r1",
    )


async def crew_of(
    cls: type[Coordinator], bus: Bus, store: Store, clock: SimClock
) -> tuple[Coordinator, GroupCommit, list[Message]]:
    """A Coordinator with a live Diagnostic in its registry, a group commit with one open
    transaction at a time, and the diagnose tasks it publishes."""
    coord = cls(bus, store, clock, run_id="r1", run_started=clock.start, settings=SETTINGS)
    hb = AgentHeartbeat(agent_id="diag-1", role="diagnostic", capabilities=[Capability.DIAGNOSE])
    coord.registry.heard(hb, clock.t)
    relay = BatchedOutboxRelay(store, bus)
    tasks: list[Message] = []

    async def on_task(msg: Message) -> None:
        tasks.append(msg)

    await bus.consume(Subjects.tasks(Capability.DIAGNOSE), on_task, group="diagnostic")
    return coord, GroupCommit(store, relay.publish_rows, None, max_open=1), tasks


async def test_events_arriving_together_share_one_transaction(env: Any) -> None:
    bus, store, clock = env
    coord, group, tasks = await crew_of(Coordinator, bus, store, clock)
    msgs = [anomaly(clock, f"pump{i}") for i in range(10)]
    applied = await asyncio.gather(*(group.apply(coord, m) for m in msgs))
    await bus.quiesce(timeout=1.0)
    assert applied == [True] * 10
    # the first opens a transaction alone; the nine that arrived meanwhile share the next
    assert (group.batches, group.batched) == (1, 9)
    incidents = store.incidents("r1")
    assert sorted(i.device_id for i in incidents) == sorted(f"pump{i}" for i in range(10))
    assert all(i.status == "diagnosing" for i in incidents)
    logged = store.messages("r1", types=["anomaly.detected"])
    assert sorted(m.id for m in logged) == sorted(str(m.id) for m in msgs)
    # every diagnose task was committed, then published once, each to its own incident
    assert sorted(t.correlation_id or "" for t in tasks) == sorted(i.id for i in incidents)
    assert store.verify_audit() == []


async def test_an_event_twice_in_one_batch_is_applied_once(env: Any) -> None:
    bus, store, clock = env
    coord, group, tasks = await crew_of(Coordinator, bus, store, clock)
    first, again = anomaly(clock, "pump1"), anomaly(clock, "pump2")
    applied = await asyncio.gather(*(group.apply(coord, m) for m in [first, again, again]))
    await bus.quiesce(timeout=1.0)
    assert applied == [True, True, False]
    assert len(store.incidents("r1")) == 2 and len(tasks) == 2


async def test_a_failing_event_fails_alone(env: Any) -> None:
    bus, store, clock = env
    coord, group, tasks = await crew_of(FaultyCoordinator, bus, store, clock)
    msgs = [anomaly(clock, d) for d in ("pump0", "pump1", "broken", "pump2")]
    outcomes = await asyncio.gather(*(group.apply(coord, m) for m in msgs), return_exceptions=True)
    await bus.quiesce(timeout=1.0)
    assert outcomes[:2] == [True, True] and outcomes[3] is True
    assert isinstance(outcomes[2], RuntimeError)
    # the batch was rolled back and its events applied one by one: the others committed,
    # the broken one left no trace, so its redelivery is applied as new
    assert sorted(i.device_id for i in store.incidents("r1")) == ["pump0", "pump1", "pump2"]
    logged = {m.id for m in store.messages("r1", types=["anomaly.detected"])}
    assert str(msgs[2].id) not in logged and len(logged) == 3
    assert len(tasks) == 3
    assert store.verify_audit() == []


async def test_a_cancelled_caller_does_not_fail_the_others(env: Any) -> None:
    bus, store, clock = env
    coord, group, tasks = await crew_of(Coordinator, bus, store, clock)
    msgs = [anomaly(clock, f"pump{i}") for i in range(4)]
    callers = [asyncio.create_task(group.apply(coord, m)) for m in msgs]
    await asyncio.sleep(0)  # every event is queued; the first batch is open
    callers[2].cancel()  # e.g. a consumer stopping: its message goes back to the broker
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    await bus.quiesce(timeout=1.0)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert [outcomes[i] for i in (0, 1, 3)] == [True, True, True]
    # the cancelled event was still waiting for a batch: it is left to its redelivery
    assert sorted(i.device_id for i in store.incidents("r1")) == ["pump0", "pump1", "pump3"]
    assert str(msgs[2].id) not in {m.id for m in store.messages("r1")}
    assert len(tasks) == 3
