"""What every request handler of the service reaches: store, bus, router, limiter, agents."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from plantcrew.api.agents import AgentDirectory
from plantcrew.api.config import ApiSettings
from plantcrew.api.health import BusProbe, Check, database_check, router_check
from plantcrew.api.ratelimit import RateLimiter
from plantcrew.bus import Bus, Subscription
from plantcrew.messages import Subjects
from plantcrew.store import Store
from plantcrew.store.access import AccessStore


@dataclass
class ApiContext:
    """The service's shared parts (one per app; see ``create_app``).

    ``bus`` is None until start-up connected it; ``started`` turns True when start-up is
    done (``/startupz``). ``router`` is a ``plantcrew.llm.ModelRouter`` or None.
    ``agent_ttl_s``: an agent silent this long (wall seconds) is not live, the Coordinator's
    ``coordinator.agent_ttl_s`` of crew.yaml. ``stopping`` is set when the service begins to
    stop (SIGTERM): its event streams then end at once, so they do not hold the shutdown.
    """

    settings: ApiSettings
    store: Store
    access: AccessStore
    bus_url: str
    agent_ttl_s: float
    router: Any = None
    bus: Bus | None = None
    started: bool = False
    keys_purge_due: float = 0.0  # monotonic s: a keyed POST then purges expired keys
    limiter: RateLimiter = field(init=False)
    agents: AgentDirectory = field(init=False)
    probe: BusProbe = field(default_factory=BusProbe)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _subs: list[Subscription] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.rate_per_s, self.settings.burst)
        self.agents = AgentDirectory(self.agent_ttl_s)

    async def attach_bus(self, bus: Bus) -> None:
        """Use ``bus`` from now on: listen to heartbeats and answer bus probes on it."""
        await self.detach_bus()
        self.bus = bus
        self._subs.append(await bus.subscribe(Subjects.CONTROL, self.agents.on_control))
        await self.probe.attach(bus)

    async def detach_bus(self) -> None:
        """Stop listening on the current bus (it is not closed: its owner closes it)."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        with contextlib.suppress(Exception):
            await self.probe.detach()
        self.bus = None

    def checks(self) -> dict[str, Check]:
        """The readiness checks: bus round trip, database, model router."""
        return {
            "bus": self.probe.check,
            "database": database_check(self.store),
            "models": router_check(self.router),
        }
