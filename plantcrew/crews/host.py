"""The Coordinator as its own process: every run on the bus, from one set of subscriptions.

``plantcrew coordinator`` (and ``plantcrew up``) run a :class:`CoordinatorHost`. It consumes
``crew.events`` (group ``coordinator``) and ``crew.dlq`` (group ``dlq-recorder``), listens to
``crew.control`` and serves ``crew.clock``, and hands each event to the
:class:`~plantcrew.crews.coordinator.Coordinator` of the event's run, made on first sight from
the ``Run`` row (kept for the ``max_runs`` most recent runs; all state is in the database, so
one that is dropped or lost in a restart is made again). All of them share one capability
registry and one outbox relay.

Time. A Coordinator's timeouts run in plant seconds. For a live run (no scenario) plant time is
the wall clock since the run's start, and the host ticks the run's Coordinator every
``tick_interval_s``. A simulated run's plant time lives in the runner's process: there the
Coordinator's clock (:class:`~plantcrew.crews.clocks.RunClock`) follows the run's messages, and
the runner drives the ticks. Each step it sends a *clock beacon*: a request on ``crew.clock``
carrying the run's plant time (an ``agent.heartbeat`` from the runner, ``time`` = plant time);
the host moves the run's clock there, ticks its Coordinator (people's votes, timeouts), flushes
the outbox and only then answers, with its own heartbeat listing the capabilities that have a
live agent. So a timeout fires at the same plant time as in-process, and the runner knows when
the crew is ready (every capability it needs is live). A run with no active incident is
*quiet*: its beacons are answered without touching the database (nothing can be due: votes and
timeouts belong to active incidents) until an event of the run arrives.

Events are taken by ``concurrency`` consumers of ``crew.events``
(:data:`~plantcrew.crews.config.EVENT_CONSUMERS` by default: how many events are in flight at
once) and applied one event of an incident at a time, in a pool of at most :data:`DB_THREADS`
threads, by group commit (:class:`~plantcrew.crews.group_commit.GroupCommit`): the events of
other incidents that arrive while a transaction is open share the next one (at most
``coordinator.group_commit`` in crew.yaml), so one commit and one audit-chain lock serve many
events while the event loop keeps serving. The rows a transaction queued in the outbox come
back from its commit and are published at once, before its events are acknowledged and before
an incident's next event is applied (:meth:`BatchedOutboxRelay.publish_rows`); the relay reads
the outbox only at start and after a failed publish.

Liveness is a property of processes, so the registry judges it on the wall clock: an agent is
live while its last heartbeat is younger than ``agent_ttl_s`` wall seconds (crew.yaml), whatever
speed a simulated run goes at. What it heard (every agent's heartbeat, other Coordinators' and
its own) goes to the ``agent`` table once per heartbeat interval, for people and the API to
read (:mod:`plantcrew.crews.roster`).

Start. A Coordinator that starts knows no agent yet, and a step routed now would find none live
and go to a person ("no live agent can ..."), though the agents are there: after a restart the
broker hands it at once the events its predecessor left unacknowledged, and people's votes wait
for the first tick. So it announces itself on ``crew.control`` (workers answer with their
heartbeats) and applies no event and no tick until it has heard an agent of every capability
it routes, or ``warmup_s`` passed (:class:`~plantcrew.crews.warmup.WarmUp`); meanwhile what
arrives waits, unacknowledged.

Run one Coordinator process per plant namespace. A second one is safe (each event is handled in
one transaction with optimistic locking; a conflict is retried through redelivery, and an
incident a process knew as it wrote it but the other changed since is read, the event applied
again at once: :mod:`plantcrew.crews.known`) but buys no throughput on one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from sqlmodel import col, func, select

from plantcrew.bus import Bus, Subscription
from plantcrew.crews.batched_relay import BatchedOutboxRelay
from plantcrew.crews.clocks import LiveClock, RunClock, as_utc, is_live
from plantcrew.crews.config import EVENT_CONSUMERS, CrewConfig
from plantcrew.crews.coordinator import ACTIVE, Coordinator
from plantcrew.crews.group_commit import GroupCommit
from plantcrew.crews.presence import answer_presence
from plantcrew.crews.recall import LessonRecall
from plantcrew.crews.registry import AgentInfo, CapabilityRegistry, process_agent_id
from plantcrew.crews.roster import AgentRoster
from plantcrew.crews.warmup import WarmUp
from plantcrew.crews.warmup import warmup_s as warmup_s_of
from plantcrew.detect.signatures import SignatureBook
from plantcrew.errors import BusError, NotFoundError, StoreError
from plantcrew.llm.budget import Budgets
from plantcrew.messages import AgentHeartbeat, Capability, DeadLetter, Message, Subjects
from plantcrew.settings import redacted_url
from plantcrew.store import Incident, Run, Store

log = structlog.get_logger("plantcrew.crews.host")
T = TypeVar("T")

CLOCK = "crew.clock"
"""Plain subject of the runner's clock beacons (request/reply; see module doc)."""

LIVE_RUN = "live"
"""The run of messages that name none (live operation)."""

DB_THREADS = 8
"""At most this many database threads (two group-commit batches, ticks, the outbox relay)."""


class WallRegistry(CapabilityRegistry):
    """A capability registry whose liveness runs on this process's monotonic wall clock
    (the ``now`` the Coordinator passes in plant seconds is ignored). Thread-safe: events are
    applied in worker threads while heartbeats arrive on the event loop."""

    def __init__(self, ttl_s: float = 15.0) -> None:
        super().__init__(ttl_s)
        self._guard = threading.Lock()

    def heard(self, hb: AgentHeartbeat, now: float) -> None:
        with self._guard:
            super().heard(hb, time.monotonic())

    def live(self, capability: Capability, now: float) -> list[AgentInfo]:
        with self._guard:
            return super().live(capability, time.monotonic())

    def live_capabilities(self) -> list[Capability]:
        """Every capability with at least one live agent."""
        return [c for c in Capability if self.live(c, 0.0)]


class CoordinatorHost:
    """Coordinators of every run on ``bus`` in one process (see module doc).

    ``warmup_s``: seconds a started host waits at most to hear an agent of every capability it
    routes before it applies events and ticks (default: two of crew.yaml's
    ``heartbeat_interval_s``, at most its ``agent_ttl_s`` and half its ``delivery.ack_wait_s``).
    """

    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        config: CrewConfig,
        concurrency: int = EVENT_CONSUMERS,
        tick_interval_s: float = 1.0,
        max_runs: int = 256,
        agent_id: str | None = None,
        signatures: SignatureBook | None = None,
        budgets: Budgets | None = None,
        warmup_s: float | None = None,
    ) -> None:
        self.bus, self.store, self.config = bus, store, config
        # no event nor tick before it has heard agents of every step it routes (module doc)
        self.warm_up = WarmUp(Capability, warmup_s_of(config) if warmup_s is None else warmup_s)
        self.budgets = budgets  # models.yaml's spend limits, sent with each reasoning step
        # the lessons a diagnose task carries: with the Diagnostic's book, only those it can use
        self.recall = LessonRecall(signatures)
        self.concurrency, self.tick_interval_s = concurrency, tick_interval_s
        self.max_runs = max_runs
        self.agent_id = agent_id or process_agent_id("coordinator")
        self.registry = WallRegistry(config.coordinator.agent_ttl_s)
        self.executor = ThreadPoolExecutor(
            max_workers=min(max(1, concurrency), DB_THREADS), thread_name_prefix="coordinator-db"
        )
        self.relay = BatchedOutboxRelay(store, bus, executor=self.executor)
        # the agent table: every heartbeat heard, written once per heartbeat interval
        self.roster = AgentRoster(store, self.executor)
        self.group = GroupCommit(
            store,
            self.relay.publish_rows,
            self.executor,
            max_batch=config.coordinator.group_commit,
            # batches form while the open ones commit; one event a transaction: as many
            # transactions at once as there are threads
            max_open=2 if config.coordinator.group_commit > 1 else DB_THREADS,
        )
        self._serial: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # key -> (lock, [users])
        self.coordinators: OrderedDict[str, Coordinator] = OrderedDict()
        self.clocks: dict[str, RunClock | LiveClock] = {}
        self.quiet: set[str] = set()
        self._opening: dict[str, asyncio.Future[Run]] = {}  # runs being read
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    # ---- runs ----------------------------------------------------------------------------
    async def coordinator_for(self, run_id: str | None) -> Coordinator:
        """The Coordinator of ``run_id`` (a run the database lacks is opened as a live run).
        The run is read in the database threads, once however many events ask at once."""
        run_id = run_id or LIVE_RUN
        coord = self.coordinators.get(run_id)
        if coord is not None:
            self.coordinators.move_to_end(run_id)
            return coord
        opening = self._opening.get(run_id)
        if opening is None:
            opening = self._opening[run_id] = asyncio.ensure_future(self._db(self._run, run_id))
            opening.add_done_callback(functools.partial(self._opened, run_id))
        run = await asyncio.shield(opening)
        coord = self.coordinators.get(run_id)
        if coord is not None:  # another event of the run got here first
            return coord
        started = as_utc(run.started_at)
        live = is_live(run.config)
        clock = LiveClock(started) if live else RunClock(started)
        coord = Coordinator(
            self.bus,
            self.store,
            clock,
            run_id=run_id,
            run_started=started,
            settings=self.config.coordinator,
            delivery=self.config.delivery.options(),
            budgets=self.budgets,
            recall=self.recall,
        )
        coord.registry = self.registry
        coord.relay = self.relay
        self.coordinators[run_id], self.clocks[run_id] = coord, clock
        while len(self.coordinators) > self.max_runs:
            old, _ = self.coordinators.popitem(last=False)
            self.clocks.pop(old, None)
            self.quiet.discard(old)
        log.info("serving run", run=run_id, live=live, started=started.isoformat())
        return coord

    def _opened(self, run_id: str, _: asyncio.Future[Run]) -> None:
        self._opening.pop(run_id, None)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _tick(self, coord: Coordinator) -> None:
        """Tick ``coord`` in the database threads and publish what it queued."""
        await self.warm_up.wait()  # a vote applied now routes the actuation
        rows = await self._db(coord.apply_tick)
        if rows:
            await self.relay.publish_rows(rows)

    def _run(self, run_id: str) -> Run:
        try:
            return self.store.get_run(run_id)
        except NotFoundError:
            pass
        run = Run(
            id=run_id,
            scenario="live",
            status="running",
            bus_url=redacted_url(self.bus.url.split("?")[0]),
            started_at=datetime.now(UTC),
            config={"live": True},
        )
        try:
            self.store.create_run(run)
        except StoreError:  # another process made it first
            return self.store.get_run(run_id)
        return run

    def _active(self, run_id: str) -> int:
        """How many incidents of ``run_id`` are still active."""
        with self.store.tx() as s:
            return int(
                s.exec(
                    select(func.count())
                    .select_from(Incident)
                    .where(col(Incident.run_id) == run_id, col(Incident.status).in_(ACTIVE))
                ).one()
            )

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Publish what the outbox still holds (after a crash), subscribe, announce."""
        await self.relay.flush()
        delivery = self.config.delivery.options()
        self._subs.append(await self.bus.subscribe(Subjects.CONTROL, self._on_control))
        self._subs.append(await self.bus.subscribe(CLOCK, self._on_clock, queue="coordinator"))
        self._subs.append(await answer_presence(self.bus, self._presence))
        for _ in range(max(1, self.concurrency)):
            self._subs.append(
                await self.bus.consume(
                    Subjects.EVENTS, self._on_event, group="coordinator", options=delivery
                )
            )
        self._subs.append(
            await self.bus.consume(
                Subjects.DLQ, self._on_dead, group="dlq-recorder", options=delivery
            )
        )
        self._tasks.append(asyncio.create_task(self._beat(), name="coordinator-heartbeats"))
        self._tasks.append(asyncio.create_task(self._record_agents(), name="coordinator-agents"))
        self._tasks.append(asyncio.create_task(self._tick_live(), name="coordinator-live-ticks"))
        self._tasks.append(asyncio.create_task(self.warm_up.run(), name="coordinator-warm-up"))
        await self.heartbeat()  # workers answer with their heartbeats
        log.info("coordinator started", agent=self.agent_id)

    async def stop(self) -> None:
        """Stop taking events (what is in flight is handed back to the group) and say so."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        with contextlib.suppress(Exception):
            await self.relay.close()
        self.roster.heard(self._heartbeat())  # the agent table says this one stopped
        await self.roster.flush()
        self.executor.shutdown(wait=True)
        with contextlib.suppress(BusError):
            await self.heartbeat()
        log.info("coordinator stopped", agent=self.agent_id)

    def _heartbeat(self) -> AgentHeartbeat:
        return AgentHeartbeat(
            agent_id=self.agent_id, role="coordinator", capabilities=[], stopping=self.stopping
        )

    async def heartbeat(self) -> None:
        """Announce this Coordinator on ``crew.control`` (workers answer with theirs)."""
        hb = self._heartbeat()
        self.roster.heard(hb)
        await self.bus.publish(Message.new(hb, source=self.agent_id, subject=Subjects.CONTROL))

    def _presence(self) -> AgentHeartbeat | None:
        """This Coordinator's answer to a presence probe (none when stopping)."""
        return None if self.stopping else self._heartbeat()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            try:
                await self.heartbeat()
            except BusError as exc:
                log.info("heartbeat not sent", error=str(exc))

    async def _record_agents(self) -> None:
        """Write the heartbeats heard to the agent table once per heartbeat interval."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            await self.roster.flush()

    async def _tick_live(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_s)
            for run_id, coord in list(self.coordinators.items()):
                if isinstance(self.clocks.get(run_id), LiveClock):
                    try:
                        await self._tick(coord)
                    except (StoreError, BusError) as exc:
                        log.warning("tick failed", run=coord.run_id, error=str(exc))

    # ---- inputs --------------------------------------------------------------------------
    async def _on_control(self, msg: Message) -> None:
        hb = msg.payload
        if not isinstance(hb, AgentHeartbeat):
            return
        self.roster.heard(hb)  # Coordinators too: the agent table lists every process
        if hb.capabilities:
            self.registry.heard(hb, 0.0)
            self.warm_up.heard(self.registry.live_capabilities(), hb.agent_id)

    async def _observe(self, msg: Message) -> Coordinator:
        coord = await self.coordinator_for(msg.run_id)
        self.clocks[coord.run_id].observe(msg.time)
        return coord

    async def _on_event(self, msg: Message) -> None:
        await self.warm_up.wait()  # its step is routed to an agent this process has heard
        coord = await self._observe(msg)
        self.quiet.discard(coord.run_id)
        key = msg.correlation_id or coord.run_id
        lock, users = self._serial.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:  # one event of an incident at a time in this process
                # committed with the events of other incidents that arrive meanwhile; what
                # it queued is published before the incident's next event is applied
                await self.group.apply(coord, msg)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._serial[key]
        if self.relay.dirty:  # a publish failed earlier: send what it left in the outbox
            await self.relay.flush()

    async def _on_dead(self, msg: Message) -> None:
        if isinstance(msg.payload, DeadLetter) and await self._db(
            self.store.record_dead_letter, msg
        ):
            log.warning(
                "dead letter",
                subject=msg.payload.original_subject,
                reason=msg.payload.reason,
                attempts=msg.payload.attempts,
            )

    async def _on_clock(self, msg: Message) -> Message:
        """A clock beacon: move the run to its plant time, tick, flush, then answer."""
        coord = await self._observe(msg)
        if coord.run_id not in self.quiet:
            await self._tick(coord)
            if not await self._db(self._active, coord.run_id):
                self.quiet.add(coord.run_id)
        hb = AgentHeartbeat(
            agent_id=self.agent_id,
            role="coordinator",
            capabilities=self.registry.live_capabilities(),
            stopping=self.stopping,
        )
        return msg.reply(hb, source=self.agent_id, subject=CLOCK)


__all__ = ["CLOCK", "DB_THREADS", "LIVE_RUN", "CoordinatorHost", "WallRegistry"]
