"""What every role agent shares: capabilities, task handling over the bus, heartbeats.

An agent is a stateless worker: it consumes ``Task`` messages for its capabilities from the
durable ``crew.tasks.<capability>`` subjects (one queue group per capability, so several
workers of a role share the load), answers each with one result message on ``crew.events``,
and announces itself with heartbeats on ``crew.control``. A handler that raises makes the bus
redeliver the task (with backoff) and, after the last attempt, dead-letter it. A result over
the bus's ``max_message_bytes`` is answered with a ``TaskFailed`` naming its size instead.

While a task is handled, :data:`current_message` holds its message (a context variable, so
each delivery sees its own): a worker process's clock and bus actuator read the run, plant
time and causation of the task from it.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, ClassVar

import structlog

from plantcrew.bus import Bus, DurableOptions, Handler, Subscription
from plantcrew.errors import MessageTooLarge
from plantcrew.messages import AgentHeartbeat, Capability, Message, Subjects, Task, TaskFailed
from plantcrew.plant.clock import Clock

log = structlog.get_logger("plantcrew.agents")

current_message: ContextVar[Message | None] = ContextVar("plantcrew_current_message", default=None)
"""The message whose task is being handled in this context (None outside a task)."""


class Agent:
    """Base of the role agents. Subclasses set ``role`` and ``capabilities`` and implement
    :meth:`handle`, returning the result payload for a task."""

    role: ClassVar[str] = "agent"
    capabilities: ClassVar[tuple[Capability, ...]] = ()

    def __init__(
        self, agent_id: str, bus: Bus, clock: Clock, *, delivery: DurableOptions | None = None
    ) -> None:
        self.agent_id, self.bus, self.clock = agent_id, bus, clock
        self.delivery = delivery or DurableOptions()
        self._subs: list[Subscription] = []
        self.in_flight = 0
        self.stopping = False

    async def start(self) -> None:
        """Subscribe to this role's task subjects and announce the agent."""
        for cap in self.task_capabilities:
            self._subs.append(await self.consume_tasks(cap, self._on_task))
        await self.heartbeat()

    @property
    def task_capabilities(self) -> list[Capability]:
        """The capabilities this agent takes tasks for (detection runs on telemetry)."""
        return [c for c in self.capabilities if c is not Capability.DETECT]

    async def consume_tasks(self, cap: Capability, handler: Handler) -> Subscription:
        """Join the group of ``cap``'s tasks (one group per capability: every agent of it,
        in every process, shares its tasks) with ``handler``."""
        return await self.bus.consume(
            Subjects.tasks(cap), handler, group=cap.value, options=self.delivery
        )

    async def stop(self) -> None:
        """Stop taking work (in-flight tasks are handed back to the bus) and say so."""
        self.stopping = True
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        with contextlib.suppress(Exception):
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Publish an ``agent.heartbeat`` (announce, liveness, load) on ``crew.control``."""
        hb = AgentHeartbeat(
            agent_id=self.agent_id,
            role=self.role,
            capabilities=list(self.capabilities),
            in_flight=self.in_flight,
            stopping=self.stopping,
        )
        await self.bus.publish(
            Message.new(hb, source=self.agent_id, subject=Subjects.CONTROL, time=self.clock.now())
        )

    async def _on_task(self, msg: Message) -> None:
        task = msg.payload
        if not isinstance(task, Task):
            raise TypeError(f"expected task.assigned on {msg.subject}, got {msg.type}")
        current_message.set(msg)
        self.in_flight += 1
        try:
            result = await self.handle(task, msg)
        finally:
            self.in_flight -= 1
        try:
            await self._answer(msg, result)
        except MessageTooLarge as exc:
            # it never fits: raising would redo the work (a model call, an actuation attempt)
            # on every redelivery and end in a dead letter while the incident waits for its
            # timeout; a TaskFailed lets the Coordinator reassign or escalate at once
            await self._answer(msg, self.failed(task, f"result not sent: {exc}"))

    async def _answer(self, msg: Message, result: Any) -> None:
        """Publish ``result`` on ``crew.events`` as the answer to task message ``msg``."""
        await self.bus.publish(
            msg.reply(
                result,
                source=self.agent_id,
                subject=Subjects.EVENTS,
                time=max(self.clock.now(), msg.time),
            )
        )

    async def handle(self, task: Task, msg: Message) -> Any:
        """Do ``task``; return its result payload (or a ``TaskFailed`` saying why not)."""
        raise NotImplementedError

    def failed(self, task: Task, reason: str) -> TaskFailed:
        """The ``TaskFailed`` answer for ``task``."""
        log.warning("task failed", agent=self.agent_id, task=task.task_id, reason=reason)
        return TaskFailed(
            task_id=task.task_id,
            incident_id=task.incident_id,
            agent_id=self.agent_id,
            reason=reason,
        )
