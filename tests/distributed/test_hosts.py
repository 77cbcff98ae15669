"""The process hosts in one process (memory://, SQLite): one Coordinator host and worker hosts
serve several runs at once, on the plant time of each run's messages; a stopping worker hands
back the task it holds and another finishes it; the clock beacon ticks a run and reports the
crew's live capabilities."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from plantcrew.agents import Policies
from plantcrew.bus import Bus, connect
from plantcrew.crews.clocks import RunClock
from plantcrew.crews.config import CrewConfig
from plantcrew.crews.host import CLOCK, CoordinatorHost
from plantcrew.crews.worker import WorkerHost
from plantcrew.messages import (
    AgentHeartbeat,
    AnomalyCleared,
    AnomalyDetected,
    Capability,
    Deviation,
    IncidentUpdated,
    Message,
    Subjects,
)
from plantcrew.plant.actuators import ActuatorCommand, ActuatorReceipt, SimulatedActuator
from plantcrew.plant.bus_actuator import COMMANDS, PlantGateway
from plantcrew.plant.spec import default_plant
from plantcrew.settings import DEFAULT_CONFIG_DIR
from plantcrew.store import Run, Store

TASK_ROLES = ("diagnostic", "operator", "safety", "reviewer")
START = datetime(2026, 1, 1, tzinfo=UTC)
# an inlet valve closing on pump1: the playbook reopens it (class 1: approved by policy)
DEVIATIONS = [
    Deviation(sensor="flow_rate", value=21.0, baseline=32.0, z=-9.0, direction="down"),
    Deviation(sensor="pressure", value=2.1, baseline=2.6, z=-4.5, direction="down"),
    Deviation(sensor="current", value=8.1, baseline=9.0, z=-3.6, direction="down"),
    Deviation(sensor="motor_temperature", value=61.0, baseline=64.0, z=-5.5, direction="down"),
]


class Plant:
    t = 0.0

    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []
        self.release = asyncio.Event()
        self.release.set()

    def apply(self, device_id: str, command: str, parameters: dict[str, Any]) -> str:
        self.applied.append((device_id, command))
        return "ok"


class HeldActuator(SimulatedActuator):
    """The simulated actuator, answering only once ``plant.release`` is set."""

    def __init__(self, plant: Plant) -> None:
        super().__init__(plant)
        self.plant = plant

    async def execute(self, cmd: ActuatorCommand) -> ActuatorReceipt:
        receipt = await super().execute(cmd)
        await self.plant.release.wait()
        return receipt


@dataclass
class World:
    bus: Bus
    store: Store
    plant: Plant
    closed: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = Store(f"sqlite:///{tmp_path / 'hosts.db'}")
    bus = await connect(f"memory://hosts-{uuid.uuid4().hex[:8]}")
    plant = Plant()
    w = World(bus, store, plant)
    await PlantGateway(bus, HeldActuator(plant), run_id=None, subject=f"{COMMANDS}.*").start()

    async def on_update(msg: Message) -> None:  # the Monitor's part: the plant recovers
        p = msg.payload
        assert isinstance(p, IncidentUpdated)
        if p.status == "verifying":
            cleared = AnomalyCleared(device_id="pump1", ts=130.0)
            await bus.publish(msg.reply(cleared, source="monitor-t", subject=Subjects.EVENTS))
        elif p.status in ("resolved", "escalated") and msg.run_id:
            w.closed[msg.run_id] = p.status

    await bus.subscribe(Subjects.INCIDENTS, on_update)
    yield w
    await bus.close()
    store.dispose()


def new_run(store: Store) -> str:
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    config = {
        "scenario": {"name": "t", "plant": default_plant().model_dump(mode="json")},
        "policies": Policies.load(DEFAULT_CONFIG_DIR / "policies.yaml").model_dump(mode="json"),
    }
    store.create_run(Run(id=run_id, scenario="t", started_at=START, config=config))
    return run_id


async def detect(bus: Bus, run_id: str, at_s: float) -> None:
    anomaly = AnomalyDetected(device_id="pump1", score=0.9, ts=at_s, deviations=DEVIATIONS)
    await bus.publish(
        Message.new(
            anomaly,
            source="monitor-t",
            subject=Subjects.EVENTS,
            run_id=run_id,
            correlation_id=run_id,
            time=START + timedelta(seconds=at_s),
        )
    )


def hosts(world: World, *, workers: int = 1) -> tuple[CoordinatorHost, list[WorkerHost]]:
    config = CrewConfig.load(DEFAULT_CONFIG_DIR / "crew.yaml")
    coordinator = CoordinatorHost(world.bus, world.store, config=config, concurrency=4)
    crew = [
        WorkerHost(world.bus, world.store, roles=TASK_ROLES, config_dir=DEFAULT_CONFIG_DIR)
        for _ in range(workers)
    ]
    return coordinator, crew


async def test_one_coordinator_and_workers_serve_runs_on_each_runs_plant_time(
    world: World,
) -> None:
    coordinator, (workers,) = hosts(world)
    await coordinator.start()
    await workers.start()
    try:
        runs = [new_run(world.store), new_run(world.store)]
        await detect(world.bus, runs[0], at_s=100.0)
        await detect(world.bus, runs[1], at_s=250.0)
        await world.bus.quiesce()
        assert world.closed == {runs[0]: "resolved", runs[1]: "resolved"}
        for run_id, at in zip(runs, (100.0, 250.0), strict=True):
            (incident,) = world.store.incidents(run_id)
            (action,) = world.store.actions(run_id=run_id)
            # the worker answered at the task's plant time, not its own clock's
            assert incident.opened_at == at and action.executed_at == at
            assert (action.device_id, action.command, action.status) == (
                "inlet_valve", "set_position", "executed",
            )  # fmt: skip
            sources = {m.source for m in world.store.messages(run_id)}
            assert {"coordinator", workers.agents[1].agent_id} <= sources  # the Operator
            assert all(m.run_id == run_id for m in world.store.messages(run_id))
        assert world.plant.applied == [("inlet_valve", "set_position")] * 2
    finally:
        await workers.stop(0.1)
        await coordinator.stop()


async def test_a_stopping_worker_hands_back_its_task_and_another_finishes_it(
    world: World,
) -> None:
    coordinator, (first, second) = hosts(world, workers=2)
    await coordinator.start()
    await first.start()
    try:
        run_id = new_run(world.store)
        world.plant.release.clear()  # the plant holds its answer
        await detect(world.bus, run_id, at_s=100.0)
        for _ in range(500):
            if world.plant.applied:
                break
            await asyncio.sleep(0.01)
        assert world.plant.applied, "the command never reached the plant"
        await second.start()
        await first.stop(grace_s=0.1)  # SIGTERM: the actuate task is handed back
        world.plant.release.set()
        await world.bus.quiesce()
        assert world.closed == {run_id: "resolved"}
        (action,) = world.store.actions(run_id=run_id)
        assert action.status == "executed"
        assert world.plant.applied == [("inlet_valve", "set_position")]  # once
        (done,) = world.store.messages(run_id, types=["action.executed"])
        assert done.source in {a.agent_id for a in second.agents}
    finally:
        await second.stop(0.1)
        await coordinator.stop()


async def test_the_clock_beacon_moves_a_run_and_reports_live_capabilities(
    world: World,
) -> None:
    coordinator, (workers,) = hosts(world)
    await coordinator.start()
    await workers.start()
    try:
        run_id = new_run(world.store)
        beacon = Message.new(
            AgentHeartbeat(agent_id="runner-t", role="runner", capabilities=[]),
            source="runner", subject=CLOCK, run_id=run_id, time=START + timedelta(seconds=42),
        )  # fmt: skip
        reply = await world.bus.request(beacon, timeout=5)
        assert isinstance(reply.payload, AgentHeartbeat)
        assert reply.payload.role == "coordinator"
        live = set(reply.payload.capabilities)
        assert live == set(Capability) - {Capability.DETECT}  # no Monitor in this crew
        clock = coordinator.clocks[run_id]
        assert isinstance(clock, RunClock) and clock.t == 42.0
        assert run_id in coordinator.quiet  # no incident: the next beacons cost nothing
    finally:
        await workers.stop(0.1)
        await coordinator.stop()
