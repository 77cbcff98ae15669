"""Actuation over the bus: the Operator's BusActuator and the plant's PlantGateway (memory://).

The plant's own actuator keeps its guarantees across the bus: one execution per idempotency
key, the approval check, and an unknown outcome reported as such when nobody answers.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from plantcrew.agents.base import current_message
from plantcrew.bus import Bus, connect
from plantcrew.errors import ApprovalError
from plantcrew.messages import Capability, Message, Subjects, Task
from plantcrew.plant.actuators import ActuatorCommand, ActuatorError, SimulatedActuator
from plantcrew.plant.bus_actuator import BusActuator, PlantGateway, command_subject
from plantcrew.scenarios.runner import approval_verifier
from plantcrew.store.tokens import issue_token


class Plant:
    """A plant with a clock that records what was applied."""

    t = 12.0

    def __init__(self) -> None:
        self.applied: list[tuple[str, str, dict[str, Any]]] = []

    def apply(self, device_id: str, command: str, parameters: dict[str, Any]) -> str:
        if device_id != "pump1":
            raise ActuatorError(f"no device {device_id!r}")
        self.applied.append((device_id, command, parameters))
        return f"{command} {parameters} on {device_id}"


def command(action_id: str = "a1", *, token: str | None = None, **params: Any) -> ActuatorCommand:
    token = token or issue_token(f"apr-{action_id}", action_id, "pump1", "set_speed", params)
    return ActuatorCommand(
        action_id=action_id,
        device_id="pump1",
        command="set_speed",
        parameters=params,
        idempotency_key=f"inc-1:{action_id}",
        approval_token=token,
    )


def actuate_task(run_id: str) -> Message:
    task = Task(task_id="inc-1-actuate-1", incident_id="inc-1", capability=Capability.ACTUATE)
    return Message.new(task, source="coordinator", subject=Subjects.tasks("actuate"), run_id=run_id)


@pytest.fixture
async def bus() -> Any:
    b = await connect(f"memory://bus-actuator-{uuid.uuid4().hex[:8]}")
    yield b
    await b.close()


async def in_task(bus: Bus, run_id: str, cmd: ActuatorCommand, timeout_s: float = 2.0) -> Any:
    """Execute ``cmd`` as an Operator handling an actuate task of ``run_id`` would."""
    token = current_message.set(actuate_task(run_id))
    try:
        actuator = BusActuator(
            bus, source="operator-x", current=current_message, timeout_s=timeout_s
        )
        return await actuator.execute(cmd)
    finally:
        current_message.reset(token)


async def test_a_command_runs_once_per_idempotency_key_across_the_bus(bus: Bus) -> None:
    plant = Plant()
    gateway = PlantGateway(bus, SimulatedActuator(plant, approval_verifier), run_id="run-1")
    await gateway.start()
    first = await in_task(bus, "run-1", command(speed_pct=80))
    again = await in_task(bus, "run-1", command(speed_pct=80))
    assert (first.status, again.status) == ("executed", "duplicate")
    assert first.ts == again.ts == 12.0 and first.detail == again.detail
    assert plant.applied == [("pump1", "set_speed", {"speed_pct": 80})]
    assert gateway.handled == {"executed": 1, "already_executed": 1}


async def test_a_forged_token_is_refused_by_the_plant_and_nothing_moves(bus: Bus) -> None:
    plant = Plant()
    await PlantGateway(bus, SimulatedActuator(plant, approval_verifier), run_id="run-1").start()
    with pytest.raises(ApprovalError, match="forged or issued for another command"):
        await in_task(bus, "run-1", command(token="0" * 64, speed_pct=80))
    assert plant.applied == []


async def test_a_failing_command_says_why(bus: Bus) -> None:
    plant = Plant()
    await PlantGateway(bus, SimulatedActuator(plant), run_id="run-1").start()
    cmd = command(speed_pct=80).model_copy(update={"device_id": "pump9"})
    with pytest.raises(ActuatorError, match="no device 'pump9'"):
        await in_task(bus, "run-1", cmd)


async def test_no_plant_answering_means_the_outcome_is_unknown(bus: Bus) -> None:
    await PlantGateway(bus, SimulatedActuator(Plant()), run_id="run-1").start()
    with pytest.raises(ActuatorError, match="outcome of set_speed on pump1 is unknown"):
        await in_task(bus, "run-2", command(speed_pct=80), timeout_s=0.2)  # another run's plant


def test_each_run_has_its_own_command_subject() -> None:
    assert command_subject("run-1") == "plant.commands.run-1"
    assert command_subject(None) == "plant.commands"
