"""Crew assembly: a Coordinator and the role agents on one bus, store and clock.

``Crew.build(...)`` makes the in-process crew of ``plantcrew run`` and ``plantcrew up``: the
Coordinator plus ``workers`` agents of each role from ``config/crew.yaml``. The same agent
classes run as separate worker processes on other hosts (``plantcrew worker --role``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from plantcrew.agents import (
    Agent,
    Asset,
    Diagnostic,
    Monitor,
    Operator,
    Policies,
    Reviewer,
    SafetyOfficer,
)
from plantcrew.bus import Bus
from plantcrew.crews.config import CrewConfig
from plantcrew.crews.coordinator import Coordinator
from plantcrew.crews.recall import LessonRecall
from plantcrew.crews.warmup import WarmUp, warmup_s
from plantcrew.detect import MonitorConfig, SignatureBook
from plantcrew.llm import ModelRouter
from plantcrew.messages import Message
from plantcrew.plant.actuators import Actuator
from plantcrew.plant.clock import Clock
from plantcrew.store import Store


@dataclass
class CrewParts:
    """What the agents need besides the bus, store and clock."""

    router: ModelRouter
    policies: Policies
    assets: dict[str, Asset]
    signatures: SignatureBook
    actuator: Actuator
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


def make_agent(
    role: str,
    n: int,
    bus: Bus,
    clock: Clock,
    store: Store,
    parts: CrewParts,
    config: CrewConfig,
    run_id: str | None = None,
) -> Agent:
    """One agent of ``role`` named ``<role>-<n>``. Raises KeyError for an unknown role."""
    agent_id = f"{role}-{n}"
    rc = config.role(role)
    kw: dict[str, Any] = {"delivery": config.delivery.options()}
    if role == "monitor":
        return Monitor(agent_id, bus, clock, config=parts.monitor, run_id=run_id, **kw)
    if role == "diagnostic":
        return Diagnostic(
            agent_id,
            bus,
            clock,
            router=parts.router,
            signatures=parts.signatures,
            model_group=rc.model_group or "reasoning",
            **kw,
        )
    if role == "operator":
        return Operator(
            agent_id,
            bus,
            clock,
            router=parts.router,
            store=store,
            actuator=parts.actuator,
            assets=parts.assets,
            policies=parts.policies,
            model_group=rc.model_group or "reasoning",
            **kw,
        )
    if role == "safety":
        return SafetyOfficer(
            agent_id,
            bus,
            clock,
            policies=parts.policies,
            assets=parts.assets,
            router=parts.router,
            model_group=rc.model_group,  # None: no model review (the default)
            **kw,
        )
    if role == "reviewer":
        return Reviewer(
            agent_id, bus, clock, router=parts.router, model_group=rc.model_group or "review", **kw
        )
    raise KeyError(role)


class Crew:
    """A Coordinator and its agents, started and stopped together."""

    def __init__(
        self,
        coordinator: Coordinator | None,
        agents: list[Agent],
        clock: Clock,
        heartbeat_interval_s: float = 5.0,
    ) -> None:
        self.coordinator, self.agents, self.clock = coordinator, agents, clock
        self.heartbeat_interval_s = heartbeat_interval_s
        self._last_beat = -1e18

    @classmethod
    def build(
        cls,
        bus: Bus,
        store: Store,
        clock: Clock,
        parts: CrewParts,
        config: CrewConfig,
        *,
        run_id: str,
        run_started: datetime,
        roles: tuple[str, ...] | None = None,
        with_coordinator: bool = True,
        on_message: Any = None,
    ) -> Crew:
        """Assemble the crew: the Coordinator and ``workers`` agents of each role. The
        Coordinator takes no event and no tick before it heard an agent of every capability
        they have, or a warm-up passed (:mod:`plantcrew.crews.warmup`)."""
        coordinator = None
        if with_coordinator:
            coordinator = Coordinator(
                bus,
                store,
                clock,
                run_id=run_id,
                run_started=run_started,
                settings=config.coordinator,
                delivery=config.delivery.options(),
                on_message=on_message,
                budgets=parts.router.config.budgets,
                recall=LessonRecall(parts.signatures),
            )
        agents = [
            make_agent(role, i + 1, bus, clock, store, parts, config, run_id)
            for role in (roles or tuple(config.roles))
            for i in range(config.role(role).workers)
        ]
        if coordinator is not None:
            # resumed on a broker, it may be handed at once an event the stopped run left
            # unacknowledged: it routes none before it heard these agents' first heartbeats
            needed = {c for a in agents for c in a.task_capabilities}
            coordinator.warm_up = WarmUp(needed, warmup_s(config))
        return cls(coordinator, agents, clock, config.heartbeat_interval_s)

    @property
    def monitor(self) -> Monitor | None:
        """The first Monitor agent, if the crew has one."""
        return next((a for a in self.agents if isinstance(a, Monitor)), None)

    async def start(self) -> None:
        if self.coordinator is not None:
            await self.coordinator.start()
        for agent in self.agents:
            await agent.start()
        self._last_beat = self.clock.t

    async def tick(self) -> None:
        """Heartbeats when due, then the Coordinator's timeouts and people's votes."""
        if self.clock.t - self._last_beat >= self.heartbeat_interval_s:
            self._last_beat = self.clock.t
            for agent in self.agents:
                await agent.heartbeat()
        if self.coordinator is not None:
            await self.coordinator.tick()

    async def stop(self) -> None:
        for agent in self.agents:
            await agent.stop()
        if self.coordinator is not None:
            await self.coordinator.stop()


__all__ = ["Crew", "CrewParts", "Message", "make_agent"]
