"""A worker process's agents: the tasks of some roles, for every run on the bus.

``plantcrew worker --role ROLE [--concurrency N]`` and ``plantcrew up`` run a
:class:`WorkerHost`. For each role it starts ``N`` agents; each is one member of the role's
durable consumer groups (one per capability, as in-process agents), so every worker of a role,
in any process on any host, shares that role's tasks. An agent of a worker takes a task of any
run and hands it to that run's own agent (``make_agent``, built once per run from the run's
context: assets, policies, Monitor settings, see ``plantcrew.crews.context``) with:

- a :class:`~plantcrew.crews.clocks.TaskClock`: it answers at the task's plant time and
  records an execution at it (remote workers do not share the runner's clock);
- a :class:`~plantcrew.plant.bus_actuator.BusActuator`: commands go to the plant's gateway on
  ``plant.commands.<run_id>``;
- the process's one telemetry cache (the plant's current state), for the Operator and the
  Safety Officer.

The Monitor role subscribes to ``telemetry.>`` in the ``monitor`` queue group and feeds each
run's own Monitor (detector state per run and device). Several monitor workers split the
telemetry between them, which splits one device's stream: run one Monitor per plant namespace.

Heartbeats: every agent announces itself at start and every ``heartbeat_interval_s`` of wall
time on ``crew.control`` (role, capabilities, tasks in flight); when a Coordinator announces
itself there, every agent answers at once (at most once a second), so a restarted Coordinator
knows its crew within a round trip.

Stopping (SIGTERM): :meth:`WorkerHost.stop` says so in a heartbeat (the Coordinator stops
routing to the agents) and takes no new task: every subscription with no task in flight stops
at once, and a task that still arrives (a subscription fetches its next task when its own
finishes) is handed back to the group at once. It waits up to ``grace_s`` for the tasks in
flight to finish, then unsubscribes, which hands back whatever is still running to the group
(another worker gets it; an action is still executed at most once:
``plantcrew.store.execution``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import structlog

from plantcrew.agents import Agent, Diagnostic, Monitor, Operator, Reviewer, SafetyOfficer
from plantcrew.agents.base import current_message
from plantcrew.agents.telemetry_cache import TelemetryCache
from plantcrew.bus import Bus, Subscription
from plantcrew.crews.clocks import TaskClock
from plantcrew.crews.config import ROLES, CrewConfig
from plantcrew.crews.context import RunContexts
from plantcrew.crews.crew import CrewParts, make_agent
from plantcrew.crews.presence import answer_presence, heartbeat_of
from plantcrew.crews.registry import process_agent_id
from plantcrew.detect import SignatureBook, load_signatures
from plantcrew.errors import BusError, ConfigError
from plantcrew.llm import ModelRouter
from plantcrew.llm.config import load_models_config
from plantcrew.messages import AgentHeartbeat, Capability, Message, Subjects, Task
from plantcrew.plant.bus_actuator import BusActuator
from plantcrew.store import Store

log = structlog.get_logger("plantcrew.crews.worker")
ROLE_CLASSES: dict[str, type[Agent]] = {
    "monitor": Monitor,
    "diagnostic": Diagnostic,
    "operator": Operator,
    "safety": SafetyOfficer,
    "reviewer": Reviewer,
}
_MAX_RUNS_PER_AGENT = 64
_ANSWER_COORDINATOR_EVERY_S = 1.0


def agent_name(role: str, index: int, concurrency: int) -> str:
    """``<role>-<host>-<pid>`` (``-<index>`` when the process runs several of the role)."""
    base = process_agent_id(role)
    return f"{base}-{index}" if concurrency > 1 else base


class _Gate:
    """Tasks in flight, and the switch that stops new ones from starting (see module doc)."""

    def __init__(self) -> None:
        self.closed = False
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._never = asyncio.Event()
        self._handing_back: set[asyncio.Future[None]] = set()

    async def enter(self, hand_back: Callable[[], Awaitable[None]]) -> None:
        """Count a task in; when closed, ``hand_back`` its subscription instead (which
        cancels this wait and gives the task to another member of the group)."""
        if self.closed:
            handing = asyncio.ensure_future(hand_back())
            self._handing_back.add(handing)
            handing.add_done_callback(self._handing_back.discard)
            await self._never.wait()  # cancelled by the hand-back
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active <= 0:
            self.active = 0
            self._idle.set()

    async def drain(self, grace_s: float) -> bool:
        """Close, then wait up to ``grace_s`` for the tasks in flight; True when none is left."""
        self.closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        return self.active == 0


class _Slot:
    """One subscription of a worker agent (a capability's group) and its tasks in flight."""

    def __init__(self) -> None:
        self.sub: Subscription | None = None
        self.busy = 0

    async def stop(self) -> None:
        """Unsubscribe (what it holds goes back to the group); a second call does nothing."""
        sub, self.sub = self.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class _RunAgents:
    """One role's per-run agents behind one worker agent (most recently used kept)."""

    def __init__(self, host: WorkerHost, role: str, agent_id: str) -> None:
        self.host, self.role, self.agent_id = host, role, agent_id
        self._agents: OrderedDict[str | None, Agent] = OrderedDict()

    def get(self, run_id: str | None) -> Agent:
        agent = self._agents.get(run_id)
        if agent is not None:
            self._agents.move_to_end(run_id)
            return agent
        agent = self.host.build_agent(self.role, self.agent_id, run_id)
        self._agents[run_id] = agent
        while len(self._agents) > _MAX_RUNS_PER_AGENT:
            self._agents.popitem(last=False)
        return agent


class WorkerAgent(Agent):
    """An agent of a worker process (see module doc); ``role`` and ``capabilities`` are set
    per role by :func:`worker_agent_class`."""

    def __init__(
        self, agent_id: str, bus: Bus, clock: TaskClock, *, host: WorkerHost, **kw: Any
    ) -> None:
        super().__init__(agent_id, bus, clock, **kw)
        self.host = host
        self.runs = _RunAgents(host, self.role, agent_id)
        self._slots: list[_Slot] = []

    async def start(self) -> None:
        """Join the role's groups, one subscription per capability, and announce the agent."""
        for cap in self.task_capabilities:
            slot = _Slot()
            slot.sub = await self.consume_tasks(cap, functools.partial(self._take, slot))
            self._slots.append(slot)
        await self.heartbeat()

    async def stop(self) -> None:
        for slot in self._slots:  # what is still running goes back to the group
            await slot.stop()
        await super().stop()

    async def _take(self, slot: _Slot, msg: Message) -> None:
        await self.host.gate.enter(functools.partial(self._hand_back, slot))
        slot.busy += 1
        try:
            await self._on_task(msg)
        finally:
            slot.busy -= 1
            self.host.gate.leave()

    async def _hand_back(self, slot: _Slot) -> None:
        log.info("stopping: a new task is handed back", agent=self.agent_id)
        await slot.stop()

    async def stop_idle(self) -> None:
        """Stop the subscriptions with no task in flight (stopping: take no new task)."""
        for slot in self._slots:
            if not slot.busy:
                await slot.stop()

    async def handle(self, task: Task, msg: Message) -> Any:
        await self.host.contexts.load(msg.run_id)  # a new run is read off the event loop
        return await self.runs.get(msg.run_id).handle(task, msg)


class MonitorWorker(Agent):
    """The Monitor role in a worker process: telemetry of every run, one Monitor per run."""

    role: ClassVar[str] = "monitor"
    capabilities: ClassVar[tuple[Capability, ...]] = (Capability.DETECT,)

    def __init__(
        self, agent_id: str, bus: Bus, clock: TaskClock, *, host: WorkerHost, **kw: Any
    ) -> None:
        super().__init__(agent_id, bus, clock, **kw)
        self.host = host
        self.runs = _RunAgents(host, "monitor", agent_id)
        self._telemetry: Subscription | None = None

    async def start(self) -> None:
        self._telemetry = await self.bus.subscribe(
            Subjects.TELEMETRY_ALL, self._on_telemetry, queue="monitor"
        )
        await super().start()

    async def stop(self) -> None:
        if self._telemetry is not None:
            with contextlib.suppress(Exception):
                await self._telemetry.unsubscribe()
            self._telemetry = None
        await super().stop()

    async def _on_telemetry(self, msg: Message) -> None:
        if self.host.gate.closed:
            return
        current_message.set(msg)
        await self.host.contexts.load(msg.run_id)  # a new run is read off the event loop
        monitor = self.runs.get(msg.run_id)
        assert isinstance(monitor, Monitor)
        await monitor._on_telemetry(msg)


def worker_agent_class(role: str) -> type[WorkerAgent] | type[MonitorWorker]:
    """The worker agent class of ``role`` (raises ConfigError for an unknown role)."""
    if role not in ROLE_CLASSES:
        raise ConfigError(f"unknown role {role!r}; roles are {list(ROLES)}", field="role")
    if role == "monitor":
        return MonitorWorker
    cls = ROLE_CLASSES[role]
    return type(
        f"{cls.__name__}Worker",
        (WorkerAgent,),
        {"role": cls.role, "capabilities": cls.capabilities},
    )


class WorkerHost:
    """The agents of ``roles`` in this process, ``concurrency`` of each (see module doc).

    ``config_dir`` holds crew.yaml (delivery, model groups, heartbeat interval), models.yaml,
    playbooks.yaml, signatures.yaml and policies.yaml (the default for live runs). Raises
    ConfigError for an unknown role or a bad config file.
    """

    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        roles: Sequence[str],
        config_dir: Path,
        concurrency: int | dict[str, int] = 1,
        heartbeat_interval_s: float | None = None,
    ) -> None:
        self.bus, self.store, self.config_dir = bus, store, config_dir
        # a role's model group must exist, or every task of the role would be dead-lettered
        groups = load_models_config(config_dir / "models.yaml").groups
        self.config = CrewConfig.load(config_dir / "crew.yaml", model_groups=groups)
        self.heartbeat_interval_s = heartbeat_interval_s or self.config.heartbeat_interval_s
        self.contexts = RunContexts(store, config_dir)
        self.clock = TaskClock(current_message, self.contexts.start_of)
        self.gate = _Gate()
        self.cache = TelemetryCache()
        self._router: ModelRouter | None = None
        self._signatures: SignatureBook | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._control: Subscription | None = None
        self._presence: Subscription | None = None  # answers presence probes (crews.presence)
        self._last_answer = 0.0
        self.agents: list[Agent] = []
        for role in roles:
            cls = worker_agent_class(role)
            n = concurrency if isinstance(concurrency, int) else concurrency.get(role, 1)
            for i in range(max(1, n)):
                self.agents.append(
                    cls(
                        agent_name(role, i + 1, n),
                        bus,
                        self.clock,
                        host=self,
                        delivery=self.config.delivery.options(),
                    )
                )

    # ---- what the per-run agents share ---------------------------------------------------
    @property
    def router(self) -> ModelRouter:
        if self._router is None:
            self._router = ModelRouter.from_file(
                self.config_dir / "models.yaml", playbooks_path=self.config_dir / "playbooks.yaml"
            )
        return self._router

    @property
    def signatures(self) -> SignatureBook:
        if self._signatures is None:
            self._signatures = load_signatures(self.config_dir / "signatures.yaml")
        return self._signatures

    def build_agent(self, role: str, agent_id: str, run_id: str | None) -> Agent:
        """The agent of ``role`` that answers ``run_id``'s tasks for worker agent ``agent_id``."""
        ctx = self.contexts.get(run_id)
        parts = CrewParts(
            router=self.router,
            policies=ctx.policies,
            assets=ctx.assets,
            signatures=self.signatures,
            actuator=BusActuator(self.bus, source=agent_id, current=current_message),
            monitor=ctx.monitor,
        )
        agent = make_agent(role, 1, self.bus, self.clock, self.store, parts, self.config, run_id)
        agent.agent_id = agent_id
        if isinstance(agent, Operator | SafetyOfficer):
            agent.cache = self.cache  # the process's one view of the plant's current state
        return agent

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe every agent, announce it, and start the heartbeats."""
        if any(a.role in ("operator", "safety") for a in self.agents):
            await self.cache.start(self.bus)
        self._control = await self.bus.subscribe(Subjects.CONTROL, self._on_control)
        for agent in self.agents:
            await agent.start()
        self._presence = await answer_presence(self.bus, lambda: heartbeat_of(self.agents))
        self._tasks.append(asyncio.create_task(self._beat(), name="worker-heartbeats"))
        log.info(
            "worker started",
            agents=[a.agent_id for a in self.agents],
            heartbeat_s=self.heartbeat_interval_s,
        )

    async def heartbeat(self) -> None:
        """Every agent announces itself now (a broker outage is logged, not raised)."""
        for agent in self.agents:
            try:
                await agent.heartbeat()
            except BusError as exc:
                log.info("heartbeat not sent", agent=agent.agent_id, error=str(exc))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            await self.heartbeat()

    async def _on_control(self, msg: Message) -> None:
        hb = msg.payload
        if not isinstance(hb, AgentHeartbeat) or hb.role != "coordinator" or self.gate.closed:
            return
        now = time.monotonic()
        if now - self._last_answer >= _ANSWER_COORDINATOR_EVERY_S:
            self._last_answer = now
            await self.heartbeat()

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking work, let tasks in flight finish for up to ``grace_s``, hand back the
        rest and say so (see module doc)."""
        for agent in self.agents:
            agent.stopping = True
        self.gate.closed = True  # no new task: one that arrives is handed back
        await self.heartbeat()  # stopping: the Coordinator routes elsewhere
        for agent in self.agents:
            if isinstance(agent, WorkerAgent):
                await agent.stop_idle()
        finished = await self.gate.drain(grace_s)
        if not finished:
            log.warning("handing back tasks still in flight", tasks=self.gate.active)
        for task in self._tasks:
            task.cancel()
        for agent in self.agents:
            await agent.stop()
        for sub in (self._control, self._presence):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        await self.cache.stop()
        log.info("worker stopped", agents=[a.agent_id for a in self.agents])


__all__ = ["MonitorWorker", "WorkerAgent", "WorkerHost", "agent_name", "worker_agent_class"]
