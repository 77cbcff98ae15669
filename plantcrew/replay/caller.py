"""Which task (and role) a model call is made for, while a run is re-executed.

A model call reaches litellm several asyncio tasks away from the agent that asked (the AutoGen
client wraps each call in a task of its own), so the call stack does not show the agent.
Context variables do travel: every asyncio task starts with a copy of its creator's context,
and an agent sets :data:`plantcrew.agents.base.current_message` to the task message it is
handling. :func:`current_caller` reads it back as a :class:`Caller`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from plantcrew.agents import Diagnostic, Monitor, Operator, Reviewer, SafetyOfficer
from plantcrew.agents.base import current_message
from plantcrew.messages import Task


@dataclass(frozen=True)
class Caller:
    """The step a model call is made for: ``task_id`` of ``incident_id``, handled by an
    agent of ``role`` (the role that has the task's capability)."""

    role: str
    task_id: str
    incident_id: str


@cache
def _roles() -> dict[str, str]:
    """Capability → the role that declares it, from the agent classes."""
    out: dict[str, str] = {}
    for cls in (Monitor, Diagnostic, Operator, SafetyOfficer, Reviewer):
        for cap in cls.capabilities:
            out.setdefault(cap.value, cls.role)
    return out


def current_caller() -> Caller | None:
    """The step being handled in this context, or None outside an agent's task."""
    msg = current_message.get()
    task = msg.payload if msg is not None else None
    if not isinstance(task, Task):
        return None
    return Caller(_roles().get(task.capability.value, ""), task.task_id, task.incident_id)


__all__ = ["Caller", "current_caller"]
