"""The start of a Coordinator: no routing before it has heard the agents.

A Coordinator that starts knows no agent yet, and a step routed now would find none live and
go to a person ("no live agent can ..."), though the agents are there: after a restart (a
Coordinator process, or a run resumed with ``--resume`` on a broker) the broker hands it at
once the events its predecessor left unacknowledged, and people's votes wait for the first
tick. So it applies no event and no tick until it has heard an agent of every capability it
routes, or ``timeout_s`` passed (two heartbeat intervals: every live agent has beaten by then;
at most ``agent_ttl_s`` and half the ack wait, so an event held meanwhile is not delivered
again); meanwhile what arrives waits, unacknowledged.

:class:`~plantcrew.crews.host.CoordinatorHost` and the in-process crew
(:class:`~plantcrew.crews.crew.Crew`, through its
:class:`~plantcrew.crews.coordinator.Coordinator`) both hold their start with a
:class:`WarmUp`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from plantcrew.crews.config import CrewConfig
from plantcrew.messages import Capability

log = structlog.get_logger("plantcrew.crews.warmup")


def warmup_s(config: CrewConfig) -> float:
    """Seconds a starting Coordinator waits at most to hear its agents: two of crew.yaml's
    ``heartbeat_interval_s``, at most its ``coordinator.agent_ttl_s`` and half its
    ``delivery.ack_wait_s``."""
    return min(
        2 * config.heartbeat_interval_s,
        config.coordinator.agent_ttl_s,
        config.delivery.ack_wait_s / 2,  # an event waiting is not redelivered meanwhile
    )


class WarmUp:
    """Holds a starting Coordinator's events and ticks (see module doc).

    ``needed``: the capabilities it routes (``detect`` is dropped: it runs on telemetry, never
    as a task). ``timeout_s``: wall seconds after :meth:`run` started when it lets everything
    through anyway (the steps of a capability still unheard then go to a person, as later).
    """

    def __init__(self, needed: Iterable[Capability], timeout_s: float) -> None:
        self.needed = frozenset(needed) - {Capability.DETECT}
        self.timeout_s = timeout_s
        self._done = asyncio.Event()
        self._live: frozenset[Capability] = frozenset()  # as the last heartbeat left them

    @property
    def done(self) -> bool:
        """True once events and ticks may go through."""
        return self._done.is_set()

    def missing(self, live: Iterable[Capability]) -> list[Capability]:
        """The needed capabilities not in ``live``, in :class:`Capability` order."""
        have = set(live)
        return [c for c in Capability if c in self.needed and c not in have]

    def heard(self, live: Iterable[Capability], agent_id: str) -> None:
        """A heartbeat of ``agent_id`` came; ``live``: every capability with a live agent now.
        Lets everything through once none is missing."""
        self._live = frozenset(live)
        if not self.done and not self.missing(self._live):
            log.info("every capability heard", agent=agent_id)
            self._done.set()

    async def wait(self) -> None:
        """Return once events and ticks may go through."""
        await self._done.wait()

    async def run(self) -> None:
        """Let everything through after ``timeout_s`` even if a capability is still unheard
        (run it as a task when the Coordinator starts)."""
        await asyncio.sleep(self.timeout_s)
        if not self.done:
            missing = [c.value for c in self.missing(self._live)]
            log.warning("taking events with capabilities unheard", missing=missing)
            self._done.set()


__all__ = ["WarmUp", "warmup_s"]
