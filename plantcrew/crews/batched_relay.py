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
  skip an id they processed;
- the caller that committed a transaction hands its rows straight to :meth:`publish_rows`
  (they come back from the commit: :mod:`plantcrew.store.deferred`), so no event costs a
  read of the outbox, and events of different incidents publish at once rather than one
  after the other behind the relay's lock. Rows of one transaction go out in order, and the
  caller acknowledges its event only after they went out (an incident's next event is
  caused by them, so its messages stay in order). When a publish fails the rows stay pending
  and the relay is :attr:`dirty`: the next :meth:`flush` reads the outbox and sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import structlog

from plantcrew.bus import Bus
from plantcrew.crews.outbox import OutboxRelay, publish_row
from plantcrew.messages import Message
from plantcrew.store import Store
from plantcrew.store.deferred import OutboxRow

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
        self._claimed: set[int] = set()  # being published by publish_rows
        self._marker: asyncio.Task[None] | None = None
        self.dirty = False
        """True when rows may be pending that no caller is publishing (a publish failed)."""

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def flush(self) -> int:
        """Publish every pending row in order; returns how many were published now."""
        count = 0
        async with self._lock:
            self.dirty = False
            while True:
                skip = self._unmarked | self._claimed
                rows = await self._db(self.store.pending_outbox, self.page + len(skip))
                fresh = [r for r in rows if r.seq not in skip]
                if not fresh:
                    break
                for row in fresh:
                    await publish_row(self.bus, Message.from_bytes(row.body), row.subject)
                    self._unmarked.add(row.seq or 0)
                    count += 1
                if len(self._unmarked) >= self.mark_batch:
                    await self._mark()
        self._mark_later()
        return count

    async def publish_rows(self, rows: Sequence[OutboxRow]) -> int:
        """Publish rows a transaction just committed, in order (see module doc); returns how
        many. Raises the bus's error after marking the relay :attr:`dirty`."""
        seqs = {r.seq for r in rows}
        self._claimed |= seqs
        try:
            for row in rows:
                await publish_row(self.bus, row.message, row.subject)
                self._unmarked.add(row.seq)
                self._claimed.discard(row.seq)
        except BaseException:
            self.dirty = True
            raise
        finally:
            self._claimed -= seqs
        self._mark_later()
        return len(rows)

    def _mark_later(self) -> None:
        if self._unmarked and (self._marker is None or self._marker.done()):
            self._marker = asyncio.create_task(self._mark_soon())

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
