"""The runner's side of a run whose Coordinator and agents live in other processes.

``plantcrew run SCENARIO --crew remote --bus nats://... --db postgresql://...`` keeps only the
plant in the runner: the simulated plant and its actuator, the telemetry it publishes and the
scripted people. :class:`RemoteCrew` stands in for the in-process crew:

- start: serve the plant's commands (``PlantGateway`` on ``plant.commands.<run_id>``), then
  send clock beacons until a Coordinator answers that every capability the run needs has a
  live agent (ScenarioError naming what is missing after ``ready_timeout_s``);
- tick (each step): a clock beacon on ``crew.clock`` with the step's plant time; the
  Coordinator applies votes and timeouts of the run at that time before it answers;
- a live view (``on_message``) gets the run's ``crew.incidents`` and ``crew.approvals`` news;
- settle (each step, twice, as ``quiesce``): wait until the whole crew has acknowledged every
  durable message (:class:`~plantcrew.crews.backlog.DurableBacklog`), at most
  ``settle_timeout_s``.

Pacing is therefore exact for everything durable (events and tasks) and best effort for the
Monitor's telemetry (plain pub/sub): an anomaly may be reported one step later than in-process.
A broker outage pauses the run: telemetry that cannot be sent is dropped (plain subjects are at
most once), beacons and settling are retried until the broker is back or ``outage_s`` passed
(then BusError ends the run).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from plantcrew.bus import Bus, DurableOptions, Handler, Subscription, is_durable
from plantcrew.crews.backlog import DurableBacklog
from plantcrew.crews.crew import Crew
from plantcrew.crews.host import CLOCK
from plantcrew.errors import BusError, ScenarioError
from plantcrew.messages import AgentHeartbeat, Capability, Message, Subjects
from plantcrew.plant.actuators import Actuator
from plantcrew.plant.bus_actuator import PlantGateway
from plantcrew.plant.clock import Clock
from plantcrew.settings import redacted_url

log = structlog.get_logger("plantcrew.crews.remote")
NEEDED = tuple(Capability)
_RETRY_S = 0.25


class RemoteCrew(Crew):
    """The in-process stand-in of a crew in other processes (see module doc)."""

    def __init__(
        self,
        bus: Bus,
        clock: Clock,
        *,
        run_id: str,
        actuator: Actuator,
        needs: Iterable[Capability] = NEEDED,
        ready_timeout_s: float = 120.0,
        settle_timeout_s: float = 60.0,
        outage_s: float = 120.0,
        beacon_timeout_s: float = 10.0,
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        super().__init__(None, [], clock)
        if bus.url.startswith("memory:"):
            raise ScenarioError(
                "a remote crew needs a broker bus (nats:// or redis://) that its processes share"
            )
        self.bus, self.run_id = bus, run_id
        self.needs = frozenset(needs)
        self.ready_timeout_s, self.settle_timeout_s = ready_timeout_s, settle_timeout_s
        self.outage_s, self.beacon_timeout_s = outage_s, beacon_timeout_s
        self.gateway = PlantGateway(bus, actuator, run_id=run_id)
        self.backlog = DurableBacklog(bus)
        self.paced_bus = PacedBus(bus, self)
        self.coordinator_id: str | None = None
        self.on_message = on_message
        self._views: list[Subscription] = []

    async def start(self) -> None:
        await self.backlog.open()
        await self.gateway.start()
        if self.on_message is not None:  # a live view: the run's incident and approval news
            for subject in (Subjects.INCIDENTS, Subjects.APPROVALS):
                self._views.append(await self.bus.subscribe(subject, self._show))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout_s
        missing: set[Capability] = set(self.needs)
        while True:
            try:
                reply = await self._beacon()
                missing = set(self.needs) - set(reply.capabilities)
                if not missing:
                    log.info("remote crew ready", run=self.run_id, coordinator=self.coordinator_id)
                    return
            except BusError as exc:
                log.info("waiting for a coordinator", run=self.run_id, error=str(exc))
            if loop.time() > deadline:
                who = (
                    f"the coordinator {self.coordinator_id} sees no live agent that can "
                    + ", ".join(sorted(c.value for c in missing))
                    if self.coordinator_id
                    else "no coordinator answers on crew.clock"
                )
                raise ScenarioError(
                    f"the remote crew on {redacted_url(self.bus.url)} is not ready after "
                    f"{self.ready_timeout_s:g} s: {who}; start `plantcrew up` (or "
                    "`plantcrew coordinator` and `plantcrew worker --role ROLE`) on that bus"
                )
            await asyncio.sleep(0.5)

    async def _show(self, msg: Message) -> None:
        if msg.run_id == self.run_id and self.on_message is not None:
            self.on_message(msg)

    async def _beacon(self) -> AgentHeartbeat:
        hb = AgentHeartbeat(agent_id=f"runner-{self.run_id}", role="runner", capabilities=[])
        msg = Message.new(
            hb, source="runner", subject=CLOCK, time=self.clock.now(), run_id=self.run_id
        )
        reply = await self.bus.request(msg, timeout=self.beacon_timeout_s)
        if not isinstance(reply.payload, AgentHeartbeat):
            raise BusError(f"crew.clock answered {reply.type}, not agent.heartbeat")
        self.coordinator_id = reply.payload.agent_id
        return reply.payload

    async def tick(self) -> None:
        """A clock beacon at the step's plant time (retried through a broker outage)."""
        await self._through_outage("clock beacon", self._beacon)

    async def settle(self, timeout: float | None = None) -> bool:
        """Wait until every durable message is acknowledged; False after the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.settle_timeout_s if timeout is None else timeout)
        while True:
            n = await self._through_outage("backlog", self.backlog.count)
            if n == 0:
                return True
            if loop.time() > deadline:
                log.warning("crew not settled", run=self.run_id, backlog=self.backlog.stuck)
                return False
            await asyncio.sleep(0.002)

    async def _through_outage(self, what: str, call: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outage_s
        while True:
            try:
                return await call()
            except BusError as exc:
                if loop.time() > deadline:
                    raise BusError(
                        f"{what} failed for {self.outage_s:g} s on "
                        f"{redacted_url(self.bus.url)}: {exc}"
                    ) from None
                log.info(f"{what} failed; retrying", run=self.run_id, error=str(exc))
                await asyncio.sleep(_RETRY_S)

    async def stop(self) -> None:
        for sub in self._views:
            with contextlib.suppress(BusError):
                await sub.unsubscribe()
        await self.gateway.stop()
        await self.backlog.close()


class PacedBus:
    """The bus as the runner's step loop sees it with a remote crew: ``quiesce`` settles the
    whole crew, and telemetry that cannot be sent during an outage is dropped, not raised."""

    def __init__(self, bus: Bus, crew: RemoteCrew) -> None:
        self.bus, self.crew = bus, crew
        self.url = bus.url
        self.dropped = 0

    @property
    def max_message_bytes(self) -> int:
        """The wrapped bus's (bytes)."""
        return self.bus.max_message_bytes

    async def connect(self) -> None:
        await self.bus.connect()

    async def close(self) -> None:
        await self.bus.close()

    async def publish(self, msg: Message, subject: str | None = None) -> None:
        try:
            await self.bus.publish(msg, subject)
        except BusError as exc:
            if is_durable(subject or msg.subject):
                raise
            self.dropped += 1
            if self.dropped % 100 == 1:
                log.warning("telemetry dropped (broker unavailable)", error=str(exc))

    async def publish_raw(self, subject: str, data: bytes) -> None:
        await self.bus.publish_raw(subject, data)

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        return await self.bus.subscribe(subject, handler, queue=queue)

    async def consume(
        self,
        subject: str,
        handler: Handler,
        *,
        group: str,
        options: DurableOptions | None = None,
    ) -> Subscription:
        return await self.bus.consume(subject, handler, group=group, options=options)

    async def request(self, msg: Message, *, timeout: float = 5.0) -> Message:
        return await self.bus.request(msg, timeout=timeout)

    async def quiesce(self, timeout: float = 10.0) -> bool:
        return await self.crew.settle()


__all__ = ["NEEDED", "PacedBus", "RemoteCrew"]
