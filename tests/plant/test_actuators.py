"""The simulated actuator: approval callback first, each idempotency key at most once."""

from __future__ import annotations

import asyncio

import pytest

from plantcrew.errors import ApprovalError
from plantcrew.plant import (
    Actuator,
    ActuatorCommand,
    ActuatorError,
    SimulatedActuator,
)

from .helpers import make_plant


def _cmd(key: str = "k1", token: str | None = "tok-1", **kw: object) -> ActuatorCommand:
    fields: dict[str, object] = {
        "action_id": "a1",
        "device_id": "pump1",
        "command": "set_speed",
        "parameters": {"speed_pct": 80},
    }
    fields.update(kw)
    return ActuatorCommand(idempotency_key=key, approval_token=token, **fields)


async def test_executes_once_and_answers_repeats_with_the_first_receipt() -> None:
    plant = make_plant()
    plant.run(10)
    actuator = SimulatedActuator(plant)
    assert isinstance(actuator, Actuator)
    first = await actuator.execute(_cmd())
    assert (first.status, first.ts, first.action_id) == ("executed", 10.0, "a1")
    assert "80" in first.detail
    assert plant.state("pump1")["speed_setpoint_pct"] == 80
    plant.run(5)
    plant.apply("pump1", "set_speed", {"speed_pct": 95})
    again = await actuator.execute(_cmd())
    assert again.status == "duplicate"
    assert (again.detail, again.ts) == (first.detail, first.ts)
    assert plant.state("pump1")["speed_setpoint_pct"] == 95  # the repeat did not touch it
    assert len(plant.commands) == 2


async def test_concurrent_repeats_execute_once() -> None:
    plant = make_plant()
    actuator = SimulatedActuator(plant)
    receipts = await asyncio.gather(*(actuator.execute(_cmd()) for _ in range(5)))
    assert sorted(r.status for r in receipts) == ["duplicate"] * 4 + ["executed"]
    assert len(plant.commands) == 1


async def test_a_key_reused_for_another_action_is_refused() -> None:
    actuator = SimulatedActuator(make_plant())
    await actuator.execute(_cmd())
    with pytest.raises(ActuatorError, match="k1"):
        await actuator.execute(_cmd(parameters={"speed_pct": 20}))


async def test_approval_check_refuses_before_the_plant_is_touched() -> None:
    seen: list[str | None] = []

    def verify(cmd: ActuatorCommand) -> None:
        seen.append(cmd.approval_token)
        if cmd.approval_token != "good":
            raise ApprovalError(f"token {cmd.approval_token!r} does not approve {cmd.action_id}")

    plant = make_plant()
    actuator = SimulatedActuator(plant, verify_approval=verify)
    with pytest.raises(ApprovalError):
        await actuator.execute(_cmd(token="forged"))
    assert plant.commands == [] and plant.state("pump1")["speed_setpoint_pct"] == 100
    receipt = await actuator.execute(_cmd(token="good"))  # the refused key was not burnt
    assert receipt.status == "executed"
    # A redelivery is answered from the receipt: the single-use token is not checked again.
    assert (await actuator.execute(_cmd(token="good"))).status == "duplicate"
    assert seen == ["forged", "good"]


async def test_plant_errors_surface_as_actuator_errors_and_burn_no_key() -> None:
    plant = make_plant()
    actuator = SimulatedActuator(plant)
    with pytest.raises(ActuatorError, match="speed_pct"):
        await actuator.execute(_cmd(parameters={"speed_pct": 500}))
    assert (await actuator.execute(_cmd())).status == "executed"
