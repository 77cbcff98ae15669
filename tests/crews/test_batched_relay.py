"""The Coordinator process's outbox relay on the in-process bus and SQLite: rows handed over by
the commit are published in order and marked, and rows whose publish failed are sent by the
next flush (nothing committed is lost, nothing is sent twice by the relay)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from plantcrew.bus import Bus, connect
from plantcrew.crews.batched_relay import BatchedOutboxRelay
from plantcrew.errors import BusError
from plantcrew.messages import AnomalyCleared, Message, Subjects
from plantcrew.store import Store, add_outbox
from plantcrew.store.deferred import OutboxRow, committed_outbox


class FlakyBus:
    """Forwards to a real bus; the publishes listed in ``fail_at`` (0-based) raise BusError."""

    def __init__(self, bus: Bus, fail_at: set[int]) -> None:
        self.bus, self.fail_at, self.calls = bus, fail_at, 0

    async def publish(self, msg: Message, subject: str | None = None) -> None:
        n, self.calls = self.calls, self.calls + 1
        if n in self.fail_at:
            raise BusError("broker unreachable")
        await self.bus.publish(msg, subject)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Bus, Store, list[Message]]]:
    bus = await connect(f"memory://relay-{tmp_path.name}")
    seen: list[Message] = []

    async def got(msg: Message) -> None:
        seen.append(msg)

    await bus.consume(Subjects.EVENTS, got, group="test")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    yield bus, store, seen
    store.dispose()
    await bus.close()


def commit(store: Store, n: int) -> list[OutboxRow]:
    with store.tx() as s:
        for i in range(n):
            msg = Message.new(
                AnomalyCleared(device_id=f"pump{i}", ts=float(i)),
                source="t",
                subject=Subjects.EVENTS,
                run_id="r1",
            )
            add_outbox(s, msg, 0.0)
        rows = committed_outbox(s)
    return rows


async def settle(seen: list[Message], n: int) -> None:
    for _ in range(200):
        if len(seen) >= n:
            return
        await asyncio.sleep(0.01)


async def test_committed_rows_are_published_in_order_and_marked(env: Any) -> None:
    bus, store, seen = env
    relay = BatchedOutboxRelay(store, bus, mark_every_s=0.01)
    rows = commit(store, 3)
    assert await relay.publish_rows(rows) == 3
    await settle(seen, 3)
    assert [m.id for m in seen] == [r.message.id for r in rows]
    await relay.close()
    assert store.pending_outbox() == []
    assert not relay.dirty
    assert await relay.flush() == 0  # nothing is sent twice


async def test_a_failed_publish_leaves_the_rows_to_the_next_flush(env: Any) -> None:
    bus, store, seen = env
    relay = BatchedOutboxRelay(store, FlakyBus(bus, fail_at={1}), mark_every_s=0.01)  # type: ignore[arg-type]
    rows = commit(store, 3)
    with pytest.raises(BusError):
        await relay.publish_rows(rows)
    assert relay.dirty
    assert await relay.flush() == 2  # the failed row and the one after it
    await settle(seen, 3)
    assert sorted(str(m.id) for m in seen) == sorted(str(r.message.id) for r in rows)
    assert not relay.dirty
    await relay.close()
    assert store.pending_outbox() == []
