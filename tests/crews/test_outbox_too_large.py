"""An outbox row over the bus's ``max_message_bytes`` is dead-lettered with the reason, and the
rows after it are published: both relays, on the in-process bus and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plantcrew.bus import Bus, connect
from plantcrew.crews.batched_relay import BatchedOutboxRelay
from plantcrew.crews.outbox import OutboxRelay
from plantcrew.messages import Capability, DeadLetter, Message, Subjects, Task
from plantcrew.store import Store, add_outbox
from plantcrew.store.deferred import OutboxRow, committed_outbox

LIMIT = 4096


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Bus, Store, list[Message], list[Message]]]:
    bus = await connect(f"memory://big-{tmp_path.name}?max_message_bytes={LIMIT}")
    tasks: list[Message] = []
    dead: list[Message] = []

    async def on_task(msg: Message) -> None:
        tasks.append(msg)

    async def on_dead(msg: Message) -> None:
        dead.append(msg)

    await bus.consume(Subjects.tasks(Capability.DIAGNOSE), on_task, group="diagnose")
    await bus.consume(Subjects.DLQ, on_dead, group="dlq")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    yield bus, store, tasks, dead
    store.dispose()
    await bus.close()


def commit(store: Store, sizes: list[int]) -> list[OutboxRow]:
    """One transaction queuing a diagnose task per size (``input`` padded by that many)."""
    with store.tx() as s:
        for i, n in enumerate(sizes):
            task = Task(
                task_id=f"t{i}",
                incident_id="i1",
                capability=Capability.DIAGNOSE,
                input={"b": "x" * n},
            )
            add_outbox(
                s, Message.new(task, source="coordinator", subject=task_subject(), run_id="r1"), 0.0
            )
        rows = committed_outbox(s)
    return rows


def task_subject() -> str:
    return Subjects.tasks(Capability.DIAGNOSE)


def check(store: Store, tasks: list[Message], dead: list[Message]) -> None:
    assert [m.payload.task_id for m in tasks if isinstance(m.payload, Task)] == ["t0", "t2"]
    (letter,) = [m.payload for m in dead]
    assert isinstance(letter, DeadLetter) and not letter.quarantined
    assert letter.original_subject == task_subject()
    assert "is over the bus's max_message_bytes of 4096 bytes" in letter.reason
    assert store.pending_outbox() == []


@pytest.mark.parametrize("relay_kind", ["plain", "batched"])
async def test_a_row_over_the_limit_is_dead_lettered_and_the_rows_after_it_go_out(
    env: tuple[Bus, Store, list[Message], list[Message]], relay_kind: str
) -> None:
    # before: the relay raised on the big row at every flush, so it and every row after it
    # stayed pending for good (each later event's flush failed on it first)
    bus, store, tasks, dead = env
    commit(store, [10, LIMIT, 10])
    if relay_kind == "plain":
        relay = OutboxRelay(store, bus)
        assert await relay.flush() == 3
    else:
        batched = BatchedOutboxRelay(store, bus)
        assert await batched.flush() == 3
        await batched.close()
    assert await bus.quiesce()
    check(store, tasks, dead)


async def test_publish_rows_dead_letters_a_row_over_the_limit(
    env: tuple[Bus, Store, list[Message], list[Message]],
) -> None:
    bus, store, tasks, dead = env
    relay = BatchedOutboxRelay(store, bus)
    assert await relay.publish_rows(commit(store, [10, LIMIT, 10])) == 3
    await relay.close()
    assert await bus.quiesce()
    assert not relay.dirty
    check(store, tasks, dead)
