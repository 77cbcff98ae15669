"""Which agent and task a model call is made for, while a run is re-executed.

A model call reaches litellm several asyncio tasks away from the agent that asked (the AutoGen
client wraps each call in its own task), so the call stack does not show the agent. Context
variables do travel: every asyncio task starts with a copy of its creator's context. The
memory bus runs each delivery of a durable message in a new task (``handler(msg)``), so an
event-loop task factory (:func:`caller_task_factory`) that sees a task being created for an
agent's task handler (a coroutine whose ``self`` is an ``Agent`` and whose ``msg`` carries a
``task.assigned`` payload) sets :data:`CURRENT_CALLER` in that task's context; every model
call made while handling the task can then read it.

Used only by replay's re-execution on the in-process bus (:mod:`plantcrew.replay.sandbox`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from plantcrew.agents.base import Agent
from plantcrew.messages import Task
from plantcrew.replay.errors import ReplayError


@dataclass(frozen=True)
class Caller:
    """The agent (``agent_id``, ``role``) handling ``task_id`` of ``incident_id``."""

    agent_id: str
    role: str
    task_id: str
    incident_id: str


CURRENT_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "plantcrew_replay_caller", default=None
)


def caller_of(coro: Any) -> Caller | None:
    """The :class:`Caller` of a not-yet-started agent task handler coroutine, else None."""
    frame = getattr(coro, "cr_frame", None)
    if frame is None:
        return None
    local = frame.f_locals
    agent, msg = local.get("self"), local.get("msg")
    task = getattr(msg, "payload", None)
    if isinstance(agent, Agent) and isinstance(task, Task):
        return Caller(agent.agent_id, agent.role, task.task_id, task.incident_id)
    return None


def caller_task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
    **kwargs: Any,
) -> asyncio.Task[Any]:
    """An event-loop task factory that tags agent task handlers (see module doc)."""
    caller = caller_of(coro)
    if caller is not None:
        context = kwargs.get("context") or contextvars.copy_context()
        context.run(CURRENT_CALLER.set, caller)
        kwargs["context"] = context
    return asyncio.Task(coro, loop=loop, **kwargs)


@contextmanager
def tagging_callers(loop: asyncio.AbstractEventLoop) -> Generator[None, None, None]:
    """Install :func:`caller_task_factory` on ``loop`` for the block; restores the old one.

    Raises ReplayError when another task factory is installed already (replay would
    silently lose its callers otherwise)."""
    previous = loop.get_task_factory()
    if previous is not None and previous is not caller_task_factory:
        raise ReplayError("the event loop has a task factory already; replay needs its own")
    loop.set_task_factory(caller_task_factory)
    try:
        yield
    finally:
        loop.set_task_factory(previous)


__all__ = ["CURRENT_CALLER", "Caller", "caller_of", "caller_task_factory", "tagging_callers"]
