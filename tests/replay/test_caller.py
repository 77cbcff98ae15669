"""Model calls are attributed to the task (and role) they are made for."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from plantcrew.agents.base import Agent
from plantcrew.messages import Capability, Message, Subjects, Task
from plantcrew.plant.clock import SimClock
from plantcrew.replay.caller import Caller, current_caller


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def publish(self, msg: Message) -> None:
        self.sent.append(msg)


class Probe(Agent):
    """An agent that notes the caller a model call made while handling a task would see."""

    role = "probe"
    capabilities = (Capability.REVIEW,)

    def __init__(self) -> None:
        super().__init__("probe-1", FakeBus(), SimClock(datetime(2026, 1, 1, tzinfo=UTC)))  # type: ignore[arg-type]
        self.seen: list[Caller | None] = []

    async def handle(self, task: Task, msg: Message) -> Any:
        async def model_call() -> Caller | None:  # the AutoGen client's own task
            return current_caller()

        self.seen.append(await asyncio.ensure_future(model_call()))
        return self.failed(task, "probe")


def task_message(task_id: str, capability: Capability) -> Message:
    task = Task(task_id=task_id, incident_id="inc-1", capability=capability)
    return Message.new(task, source="coordinator", subject=Subjects.tasks(capability))


async def test_a_call_made_while_handling_a_task_knows_the_task_and_role() -> None:
    agent = Probe()
    # as the memory bus does: each delivery is handled in a task of its own
    await asyncio.create_task(agent._on_task(task_message("inc-1-review-1", Capability.REVIEW)))
    await asyncio.create_task(agent._on_task(task_message("inc-1-diagnose-2", Capability.DIAGNOSE)))
    assert agent.seen == [
        Caller("reviewer", "inc-1-review-1", "inc-1"),
        Caller("diagnostic", "inc-1-diagnose-2", "inc-1"),
    ]
    assert current_caller() is None  # outside a task
