"""A Coordinator host opens each run once, off the event loop, however many events ask at once
(in-process bus, SQLite)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

from plantcrew.bus import connect
from plantcrew.crews.config import CrewConfig
from plantcrew.crews.host import CoordinatorHost
from plantcrew.llm.budget import Budgets
from plantcrew.messages import (
    AgentHeartbeat,
    AnomalyDetected,
    Capability,
    Deviation,
    Message,
    Subjects,
    Task,
)
from plantcrew.settings import DEFAULT_CONFIG_DIR
from plantcrew.store import Run, Store


async def test_concurrent_events_of_a_new_run_read_it_once(tmp_path: Path) -> None:
    bus = await connect(f"memory://host-{tmp_path.name}")
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    store.create_run(Run(id="r1", started_at=datetime(2026, 1, 1, tzinfo=UTC), config={}))
    config = CrewConfig.load(DEFAULT_CONFIG_DIR / "crew.yaml")
    host = CoordinatorHost(bus, store, config=config, concurrency=2)
    reads: list[str] = []
    real = store.get_run

    def get_run(run_id: str) -> Run:
        reads.append(threading.current_thread().name)
        return real(run_id)

    store.get_run = get_run  # type: ignore[method-assign]
    try:
        coords = await asyncio.gather(*(host.coordinator_for("r1") for _ in range(5)))
        assert all(c is coords[0] for c in coords) and coords[0].run_id == "r1"
        assert len(reads) == 1 and reads[0].startswith("coordinator-db")
        assert await host.coordinator_for("r1") is coords[0] and len(reads) == 1
    finally:
        host.executor.shutdown(wait=True)
        store.dispose()
        await bus.close()


async def test_the_hosts_coordinators_send_each_reasoning_step_its_budget(tmp_path: Path) -> None:
    # models.yaml's spend limits hold for a crew of processes too: a diagnose task carries
    # the budget's status (here a per-incident limit of 0: playbook only)
    bus = await connect(f"memory://host-budget-{tmp_path.name}")
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    started = datetime(2026, 1, 1, tzinfo=UTC)
    store.create_run(Run(id="r1", started_at=started, config={"scenario": {}}))
    config = CrewConfig.load(DEFAULT_CONFIG_DIR / "crew.yaml")
    budgets = Budgets(per_incident_usd=0.0)
    host = CoordinatorHost(bus, store, config=config, concurrency=2, budgets=budgets)
    try:
        coord = await host.coordinator_for("r1")
        host.registry.heard(
            AgentHeartbeat(agent_id="d1", role="diagnostic", capabilities=[Capability.DIAGNOSE]),
            0.0,
        )
        dev = Deviation(sensor="bearing_temp", value=95, baseline=60, z=20, direction="up")
        anomaly = AnomalyDetected(device_id="pump1", score=0.99, ts=1.0, deviations=[dev])
        event = Message.new(
            anomaly, source="monitor-1", subject=Subjects.EVENTS, time=started, run_id="r1"
        )
        assert coord.apply_event(event)
        [task] = [
            m.payload
            for e in store.pending_outbox()
            if isinstance((m := Message.from_bytes(e.body)).payload, Task)
        ]
        assert task.capability is Capability.DIAGNOSE
        [scope] = task.input["budget"]["scopes"]
        assert (scope["scope"], scope["level"]) == ("incident", "exhausted")
    finally:
        host.executor.shutdown(wait=True)
        store.dispose()
        await bus.close()
