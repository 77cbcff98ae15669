"""The outbox relay: publishes what committed transactions queued, in order, at least once.

A crash between publishing and marking re-publishes on restart; the broker drops the repeat
because the message id is its dedupe key, and handlers skip ids they processed.
"""

from __future__ import annotations

import asyncio

from plantcrew.bus import Bus
from plantcrew.messages import Message
from plantcrew.store import Store


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
                        await self.bus.publish(Message.from_bytes(row.body), row.subject)
                        done.append(row.seq or 0)
                finally:
                    self.store.mark_published(done)
                count += len(done)
