"""The outbox relay of a Coordinator process: publishes in order, marks in batches, and keeps
the database off the event loop.

Same contract as :class:`~plantcrew.crews.outbox.OutboxRelay` (``flush`` publishes every row
that committed transactions queued, in order, at least once), with two differences that matter
when one process serves many incidents at once:

- the database calls run in the host's thread pool, so the event loop keeps delivering
  messages, beacons and probes while PostgreSQL flushes its write-ahead log;
- rows are marked published in batches (every ``mark_every_s`` or ``mark_batch`` rows) instead
  of one write per event, which halves the commits an incident costs. Published rows not yet
  marked are remembered here, so they are not sent again; after a crash they are sent again on
  restart, and the broker drops the repeat (the message id is its dedupe key) or the handlers
  skip an id they processed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import structlog

from plantcrew.bus import Bus
from plantcrew.crews.outbox import OutboxRelay
from plantcrew.messages import Message
from plantcrew.store import Store

T = TypeVar("T")

log = structlog.get_logger("plantcrew.crews.batched_relay")


class BatchedOutboxRelay(OutboxRelay):
    """Moves ``outbox`` rows to the bus (see module doc); ``flush`` is safe to call from many
    coroutines at once."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        executor: Executor | None = None,
        mark_every_s: float = 0.05,
        mark_batch: int = 200,
        page: int = 500,
    ) -> None:
        super().__init__(store, bus)
        self.executor = executor
        self.mark_every_s, self.mark_batch, self.page = mark_every_s, mark_batch, page
        self._unmarked: set[int] = set()
        self._marker: asyncio.Task[None] | None = None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def flush(self) -> int:
        """Publish every pending row in order; returns how many were published now."""
        count = 0
        async with self._lock:
            while True:
                rows = await self._db(self.store.pending_outbox, self.page + len(self._unmarked))
                fresh = [r for r in rows if r.seq not in self._unmarked]
                if not fresh:
                    break
                for row in fresh:
                    await self.bus.publish(Message.from_bytes(row.body), row.subject)
                    self._unmarked.add(row.seq or 0)
                    count += 1
                if len(self._unmarked) >= self.mark_batch:
                    await self._mark()
        if self._unmarked and (self._marker is None or self._marker.done()):
            self._marker = asyncio.create_task(self._mark_soon())
        return count

    async def _mark(self) -> None:
        seqs = sorted(self._unmarked)
        if seqs:
            await self._db(self.store.mark_published, seqs)
            self._unmarked.difference_update(seqs)

    async def _mark_soon(self) -> None:
        await asyncio.sleep(self.mark_every_s)
        async with self._lock:
            try:
                await self._mark()
            except Exception as exc:  # kept in memory; marked with the next batch
                log.warning("marking published rows failed", error=repr(exc))

    async def close(self) -> None:
        """Mark what was published (call before closing the store)."""
        if self._marker is not None:
            self._marker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._marker
        async with self._lock:
            await self._mark()


__all__ = ["BatchedOutboxRelay"]
