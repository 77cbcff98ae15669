"""The health of agents as the service sees it: the last heartbeat of each, in wall time.

Two sources: the heartbeats this process hears on ``crew.control`` itself, and the ``agent``
table that a Coordinator process writes with every heartbeat it hears
(:mod:`plantcrew.crews.roster`). The table covers a service that is not on the crew's bus
(another ``memory://`` process), has just started, or lost its bus; the bus gives the load
(``in_flight``) and plant time, which the table does not keep. Of the two, the more recent
heartbeat of each agent is shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from plantcrew.crews.registry import is_live
from plantcrew.crews.roster import agent_views
from plantcrew.messages import AgentHeartbeat, Message
from plantcrew.store import AgentRecord


@dataclass
class _Seen:
    heartbeat: AgentHeartbeat
    seen_at: float  # wall seconds (time.time) when this process received it
    plant_time: str  # the heartbeat's own time (plant clock, ISO 8601)


class AgentDirectory:
    """Agents heard on ``crew.control``. An agent is live while its last heartbeat is younger
    than ``ttl_s`` wall seconds and it has not said it is stopping (the Coordinator's rule,
    :func:`~plantcrew.crews.registry.is_live`)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._agents: dict[str, _Seen] = {}

    async def on_control(self, msg: Message) -> None:
        """Bus handler for ``crew.control``: remember heartbeats, ignore the rest."""
        if isinstance(msg.payload, AgentHeartbeat):
            self._agents[msg.payload.agent_id] = _Seen(
                msg.payload, self.clock(), msg.time.isoformat()
            )

    def snapshot(self, recorded: Sequence[AgentRecord] = ()) -> list[dict[str, Any]]:
        """Every agent heard here or in ``recorded`` (rows of the ``agent`` table), by role
        then id: ids, capabilities, load, age (s), liveness and ``source`` (``bus``: heard
        here; ``database``: a Coordinator process heard it more recently, or this process
        never did; then ``in_flight`` and ``last_heartbeat_plant_time`` are None)."""
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        for seen in self._agents.values():
            hb = seen.heartbeat
            age = max(0.0, now - seen.seen_at)
            out[hb.agent_id] = {
                "agent_id": hb.agent_id,
                "role": hb.role,
                "capabilities": [c.value for c in hb.capabilities],
                "in_flight": hb.in_flight,
                "stopping": hb.stopping,
                "last_heartbeat_age_s": round(age, 3),
                "last_heartbeat_plant_time": seen.plant_time,
                "live": is_live(age, hb.stopping, self.ttl_s),
                "source": "bus",
            }
        for v in agent_views(recorded, self.ttl_s, datetime.fromtimestamp(now, UTC)):
            mine = out.get(v.agent_id)
            if mine is not None and mine["last_heartbeat_age_s"] <= v.age_s:
                continue
            out[v.agent_id] = {
                "agent_id": v.agent_id,
                "role": v.role,
                "capabilities": v.capabilities,
                "in_flight": None,
                "stopping": v.stopping,
                "last_heartbeat_age_s": round(v.age_s, 3),
                "last_heartbeat_plant_time": None,
                "live": v.live,
                "source": "database",
            }
        return sorted(out.values(), key=lambda a: (a["role"], a["agent_id"]))
