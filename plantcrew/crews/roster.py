"""The ``agent`` table as a Coordinator process keeps it: one row per agent, its last heartbeat.

A Coordinator process (:class:`~plantcrew.crews.host.CoordinatorHost`) hears every heartbeat
on ``crew.control``: each agent's, every ``heartbeat_interval_s``, and its own.
:class:`AgentRoster` keeps the newest heartbeat of each agent since its last write, stamped
with the UTC wall time it arrived, and :meth:`AgentRoster.flush` writes them all in one
transaction. The host flushes once per heartbeat interval (and when it stops), so the table
costs at most one row write per agent per interval, and one transaction per interval for the
whole crew. A row's ``last_seen`` lags the agent's newest heartbeat by at most one interval.

The writes are not put into the events' group commit (:mod:`plantcrew.crews.group_commit`):
those transactions hold the audit chain's lock, which the agent rows would make longer for
every event, a failed agent write would roll back the events with it, and an idle crew (when
people look at its agents) commits none to join. Instead the roster's transaction runs in
the host's database threads while the event loop keeps serving; no event waits for it.

The rows of agents silent for :data:`FORGET_AFTER_S` are deleted, at most once every
:data:`FORGET_EVERY_S` (a restarted worker is a new agent, ``<role>-<host>-<pid>``, so the
table would otherwise keep every process that ever ran).

Readers judge liveness with the Coordinator's rule
(:func:`~plantcrew.crews.registry.is_live`) on the row's age: :func:`agent_views`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from plantcrew.crews.registry import is_live
from plantcrew.errors import StoreError
from plantcrew.messages import AgentHeartbeat
from plantcrew.store import AgentRecord, Store

log = structlog.get_logger("plantcrew.crews.roster")

FORGET_AFTER_S = 86_400.0
"""Rows of agents not heard for this long (wall seconds) are deleted."""

FORGET_EVERY_S = 3_600.0
"""At most one such deletion per this many wall seconds (the first flush makes one)."""


def utc_now() -> datetime:
    """The current UTC wall time (aware)."""
    return datetime.now(UTC)


class AgentRoster:
    """The heartbeats a Coordinator process heard since its last write to the ``agent`` table
    (see module doc). ``executor`` runs the write off the event loop (None: the loop's
    default); ``clock`` gives aware UTC wall time. Use it from one event loop."""

    def __init__(
        self,
        store: Store,
        executor: Executor | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store, self.executor, self.clock = store, executor, clock
        self._pending: dict[str, AgentRecord] = {}
        self._forgot_at: float | None = None  # monotonic s of the last deletion
        self.writes = 0
        """Rows written so far (for tests and metrics)."""

    def heard(self, hb: AgentHeartbeat) -> None:
        """Keep ``hb``, received now, for the next write (it replaces the agent's older one)."""
        self._pending[hb.agent_id] = AgentRecord(
            agent_id=hb.agent_id,
            role=hb.role,
            capabilities=[c.value for c in hb.capabilities],
            last_seen=self.clock(),
            stopping=hb.stopping,
        )

    async def flush(self) -> int:
        """Write what was heard since the last write in one transaction; returns how many
        rows. A database that fails is logged (one warning) and the rows are kept for the
        next flush, unless a newer heartbeat of the agent came meanwhile."""
        rows, self._pending = list(self._pending.values()), {}
        now = time.monotonic()
        forget = self._forgot_at is None or now - self._forgot_at >= FORGET_EVERY_S
        if not rows and not forget:
            return 0
        before = self.clock() - timedelta(seconds=FORGET_AFTER_S) if forget else None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self._write, rows, before)
        except StoreError as exc:
            for row in rows:
                self._pending.setdefault(row.agent_id, row)
            log.warning("agents' heartbeats not recorded", agents=len(rows), error=str(exc))
            return 0
        if forget:
            self._forgot_at = now
        self.writes += len(rows)
        return len(rows)

    def _write(self, rows: Sequence[AgentRecord], before: datetime | None) -> None:
        self.store.record_agents(rows, forget_before=before)


@dataclass(frozen=True)
class AgentView:
    """One row of the ``agent`` table as a reader sees it now: ``age_s`` wall seconds since
    ``last_seen``; ``live`` by the Coordinator's rule (:func:`~plantcrew.crews.registry.is_live`).
    """

    agent_id: str
    role: str
    capabilities: list[str]
    last_seen: datetime
    stopping: bool
    age_s: float
    live: bool

    @property
    def state(self) -> str:
        """``live``, ``stopping`` (it said so) or ``silent`` (heard too long ago)."""
        return "live" if self.live else "stopping" if self.stopping else "silent"


def agent_views(
    rows: Sequence[AgentRecord], ttl_s: float, now: datetime | None = None
) -> list[AgentView]:
    """``rows`` (the ``agent`` table) with their age at ``now`` (aware; default: the UTC wall
    clock) and liveness for an agent TTL of ``ttl_s`` seconds (crew.yaml's
    ``coordinator.agent_ttl_s``). An age below 0 (clocks of two hosts apart) counts as 0."""
    at = now or utc_now()
    views = []
    for r in rows:
        age = max(0.0, (at - r.last_seen).total_seconds())
        views.append(
            AgentView(
                r.agent_id, r.role, list(r.capabilities), r.last_seen, r.stopping, age,
                is_live(age, r.stopping, ttl_s),
            )
        )  # fmt: skip
    return views


__all__ = [
    "FORGET_AFTER_S",
    "FORGET_EVERY_S",
    "AgentRoster",
    "AgentView",
    "agent_views",
    "utc_now",
]
