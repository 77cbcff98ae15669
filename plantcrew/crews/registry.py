"""The capability registry: which agents live, and what they can do, from their heartbeats."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from plantcrew.messages import AgentHeartbeat, Capability


def process_agent_id(role: str) -> str:
    """The id of this process's agent of ``role``: ``<role>-<host>-<pid>``, unique on the
    crew's bus while the process lives (what ``plantcrew coordinator`` and ``worker`` and the
    presence probe call themselves)."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def is_live(age_s: float, stopping: bool, ttl_s: float) -> bool:
    """The Coordinator's liveness rule: an agent is live while its last heartbeat is
    ``age_s`` seconds old, at most ``ttl_s``, and did not say it is stopping. Seconds of one
    clock (the registry's plant or wall seconds; the ``agent`` table's UTC wall time)."""
    return not stopping and age_s <= ttl_s


@dataclass
class AgentInfo:
    """What the Coordinator knows of one agent; ``last_seen`` in plant seconds."""

    agent_id: str
    role: str
    capabilities: frozenset[Capability]
    last_seen: float
    in_flight: int = 0
    stopping: bool = False


class CapabilityRegistry:
    """Agents by capability. An agent is live while its last heartbeat is younger than ``ttl_s``
    (plant seconds) and it has not said it is stopping (:func:`is_live`)."""

    def __init__(self, ttl_s: float = 15.0) -> None:
        self.ttl_s = ttl_s
        self.agents: dict[str, AgentInfo] = {}

    def heard(self, hb: AgentHeartbeat, now: float) -> None:
        """Record a heartbeat received at plant time ``now``."""
        self.agents[hb.agent_id] = AgentInfo(
            hb.agent_id, hb.role, frozenset(hb.capabilities), now, hb.in_flight, hb.stopping
        )

    def live(self, capability: Capability, now: float) -> list[AgentInfo]:
        """Live agents with ``capability``, least loaded first."""
        found = [
            a
            for a in self.agents.values()
            if capability in a.capabilities and is_live(now - a.last_seen, a.stopping, self.ttl_s)
        ]
        return sorted(found, key=lambda a: (a.in_flight, a.agent_id))
