"""The outbox relay: publishes what committed transactions queued, in order, at least once.

A crash between publishing and marking re-publishes on restart; the broker drops the repeat
because the message id is its dedupe key, and handlers skip ids they processed. A row over
the bus's ``max_message_bytes`` can never be sent: it is dead-lettered with the reason
(:func:`publish_row`) and the rows after it go on.
"""

from __future__ import annotations

import asyncio

import structlog

from plantcrew.bus import Bus
from plantcrew.bus.base import dead_letter
from plantcrew.errors import MessageTooLarge
from plantcrew.messages import Message
from plantcrew.store import Store

log = structlog.get_logger("plantcrew.outbox")


async def publish_row(bus: Bus, msg: Message, subject: str) -> None:
    """Publish an outbox row's message ``msg`` on ``subject``; one over the bus's
    ``max_message_bytes`` goes to ``crew.dlq`` instead (a ``DeadLetter`` with the reason and
    as much of its bytes as fits the limit), so it is recorded and does not hold back the rows
    after it. Raises the bus's other errors (the row stays pending)."""
    try:
        await bus.publish(msg, subject)
        return
    except MessageTooLarge as exc:
        too_large = exc
    log.error("outbox message too large: dead-lettered", subject=subject, id=str(msg.id))
    raw, keep = msg.wire_bytes(), too_large.limit // 2
    while True:
        letter = dead_letter(
            subject=subject,
            reason=str(too_large),
            raw=raw[:keep],
            attempts=1,
            quarantined=False,
            original=msg,
            source="outbox",
        )
        try:
            await bus.publish(letter)
            return
        except MessageTooLarge:
            if keep == 0:
                raise
            keep //= 2  # the bytes grow when escaped inside the letter: keep less


class OutboxRelay:
    """Moves ``outbox`` rows to the bus. ``flush`` is safe to call from many places."""

    def __init__(self, store: Store, bus: Bus) -> None:
        self.store, self.bus = store, bus
        self._lock = asyncio.Lock()

    async def flush(self) -> int:
        """Publish every pending row in order; returns how many were published."""
        count = 0
        async with self._lock:
            while True:
                pending = self.store.pending_outbox()
                if not pending:
                    return count
                done: list[int] = []
                try:
                    for row in pending:
                        await publish_row(self.bus, Message.from_bytes(row.body), row.subject)
                        done.append(row.seq or 0)
                finally:
                    self.store.mark_published(done)
                count += len(done)
