"""The health of agents as the service sees it: the last heartbeat of each, in wall time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plantcrew.messages import AgentHeartbeat, Message


@dataclass
class _Seen:
    heartbeat: AgentHeartbeat
    seen_at: float  # wall seconds (time.time) when this process received it
    plant_time: str  # the heartbeat's own time (plant clock, ISO 8601)


class AgentDirectory:
    """Agents heard on ``crew.control``. An agent is live while its last heartbeat is younger
    than ``ttl_s`` wall seconds and it has not said it is stopping."""

    def __init__(self, ttl_s: float = 15.0, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._agents: dict[str, _Seen] = {}

    async def on_control(self, msg: Message) -> None:
        """Bus handler for ``crew.control``: remember heartbeats, ignore the rest."""
        if isinstance(msg.payload, AgentHeartbeat):
            self._agents[msg.payload.agent_id] = _Seen(
                msg.payload, self.clock(), msg.time.isoformat()
            )

    def snapshot(self) -> list[dict[str, Any]]:
        """Every agent heard, by role then id: ids, capabilities, load, age (s) and liveness."""
        now = self.clock()
        out = []
        for seen in sorted(
            self._agents.values(), key=lambda s: (s.heartbeat.role, s.heartbeat.agent_id)
        ):
            hb = seen.heartbeat
            age = max(0.0, now - seen.seen_at)
            out.append(
                {
                    "agent_id": hb.agent_id,
                    "role": hb.role,
                    "capabilities": [c.value for c in hb.capabilities],
                    "in_flight": hb.in_flight,
                    "stopping": hb.stopping,
                    "last_heartbeat_age_s": round(age, 3),
                    "last_heartbeat_plant_time": seen.plant_time,
                    "live": (not hb.stopping) and age <= self.ttl_s,
                }
            )
        return out
