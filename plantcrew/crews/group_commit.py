"""Group commit: the events of several incidents applied in one database transaction.

A Coordinator process applies each ``crew.events`` message in a transaction. On PostgreSQL
every commit waits for the write-ahead log to reach the disk, and every transaction that
writes the audit log holds the chain's lock (:data:`plantcrew.store.audit.AUDIT_LOCK`) from
its audit insert to its commit: commits are serialised, so one event per transaction caps a
process at one event per (audit insert + commit) however many threads apply events, and
each event pays a transaction's fixed costs (connection checkout, ``BEGIN``, the chain's
lock and last entry, the conversation and outbox inserts, ``COMMIT``).

:class:`GroupCommit` applies the events that arrive while a transaction is open together in
the next one, as PostgreSQL itself groups the WAL flushes of concurrent commits: up to
``max_batch`` events in one transaction: one multi-row insert logs (and de-duplicates) the
batch's events in the conversation, their handlers run one after the other, and the
messages they queued go into ``message`` and ``outbox`` with one multi-row insert each, under
one audit-chain lock and one commit. At most ``max_open`` batches are open
at once (one commits while the next fills). After the commit it publishes the outbox rows
the batch queued, in order, through the host's relay, and only then answers each caller,
which then acknowledges its event (ack after commit, as DESIGN.md's delivery rules say).

A failing event does not take the others with it: if any event of a batch raises (e.g. a
:class:`~plantcrew.crews.known.StaleIncident`: another process changed an incident this one
knew), the batch is rolled back and each of its events is applied again in a transaction of
its own (:meth:`~plantcrew.crews.coordinator.Coordinator.apply`, which applies it once more
after a StaleIncident), so the others commit and only the failing one raises, to its own
caller (whose message is then redelivered, and in the end dead-lettered). An event is thus
applied at most three times in this process, and committed once; the Coordinator's
``on_message`` hook (set only by in-process crews, never by a host) would see it each time.

The caller keeps one event of an incident in flight at a time (the host's per-incident
lock), so two open batches never hold the same incident's rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import structlog

from plantcrew.crews.coordinator import Coordinator
from plantcrew.crews.known import StaleIncident
from plantcrew.messages import Message
from plantcrew.store import Store, record_messages
from plantcrew.store.deferred import OutboxRow, committed_outbox

log = structlog.get_logger("plantcrew.crews.group_commit")

Outcome = bool | Exception
"""Per event: True (applied), False (processed before), or the exception it raised."""


@dataclass
class _Event:
    coordinator: Coordinator
    message: Message
    done: asyncio.Future[bool]


class GroupCommit:
    """Applies ``crew.events`` messages of many runs and incidents in shared transactions
    (see module doc).

    ``publish`` sends a committed batch's outbox rows in order (the host's
    :meth:`~plantcrew.crews.batched_relay.BatchedOutboxRelay.publish_rows`); ``executor``
    runs the database work off the event loop. Use it from one event loop.
    """

    def __init__(
        self,
        store: Store,
        publish: Callable[[Sequence[OutboxRow]], Any],
        executor: Executor | None,
        *,
        max_batch: int = 64,
        max_open: int = 2,
    ) -> None:
        if max_batch < 1 or max_open < 1:
            raise ValueError(f"max_batch and max_open must be >= 1, got {max_batch}, {max_open}")
        self.store, self.publish, self.executor = store, publish, executor
        self.max_batch, self.max_open = max_batch, max_open
        self._pending: list[_Event] = []
        self._open = 0
        self._runs: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Transactions committed so far by batches of more than one event (for tests and
        benchmarks)."""
        self.batched = 0
        """Events committed in those batches."""

    async def apply(self, coordinator: Coordinator, message: Message) -> bool:
        """Apply ``message`` with ``coordinator`` in the next batch; returns once its
        transaction committed and the rows it queued were published: True when applied,
        False when the message was processed before. Raises what applying it alone raised
        (e.g. :class:`~plantcrew.errors.StoreError`), or the bus's error from publishing."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Event(coordinator, message, done))
        self._start_batches()
        return await done

    def _start_batches(self) -> None:
        # an event whose caller was cancelled meanwhile went back to the broker: skip it
        self._pending = [e for e in self._pending if not e.done.done()]
        while self._pending and self._open < self.max_open:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self._open += 1
            task = asyncio.create_task(self._run(batch), name="coordinator-group-commit")
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)

    async def _run(self, batch: list[_Event]) -> None:
        try:
            loop = asyncio.get_running_loop()
            outcomes, rows = await loop.run_in_executor(self.executor, self._commit, batch)
            if rows:
                await self.publish(rows)
            for event, outcome in zip(batch, outcomes, strict=True):
                if event.done.done():  # its caller was cancelled (its message handed back)
                    continue
                if isinstance(outcome, Exception):
                    event.done.set_exception(outcome)
                else:
                    event.done.set_result(outcome)
        except BaseException as exc:  # the executor or the publish failed: every caller knows
            for event in batch:
                if not event.done.done():
                    event.done.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._open -= 1
            self._start_batches()

    def _commit(self, batch: list[_Event]) -> tuple[list[Outcome], list[OutboxRow]]:
        """In a database thread: the batch in one transaction, or each event alone."""
        if len(batch) > 1:
            try:
                with self.store.tx() as s:
                    applied = record_messages(
                        s, [(e.message, e.coordinator.plant_time(e.message)) for e in batch]
                    )
                    for e, new in zip(batch, applied, strict=True):
                        if new:
                            e.coordinator.handle_in(s, e.message)
                    rows = committed_outbox(s)
            except Exception as exc:
                # an incident changed by another process: expected with several of them
                say = log.info if isinstance(exc, StaleIncident) else log.warning
                say(
                    "group commit failed; applying its events one by one",
                    events=len(batch),
                    error=repr(exc),
                )
            else:
                self.batches += 1
                self.batched += len(batch)
                for e, ok in zip(batch, applied, strict=True):
                    if ok:
                        e.coordinator.applied()
                return list(applied), rows
        outcomes: list[Outcome] = []
        alone: list[OutboxRow] = []
        for e in batch:
            try:
                committed = e.coordinator.apply(e.message)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(committed is not None)
                alone.extend(committed or ())
        return outcomes, alone


__all__ = ["GroupCommit"]
