"""``redis://``: a member's late word about an entry another member has taken over (real server
on 6379).

A member's "nak" (give the entry back, claimable after the backoff) can reach Redis late: sent
into a partition and delivered when it heals, or from a process that stalled. By then the
entry may be idle past the claim time and taken over (``XAUTOCLAIM``) by another member,
which is handling it. Before the fix the late nak (``XCLAIM`` with ``IDLE``) took the entry
back from that member and made it claimable at once: a third member could take it and run the
same task beside the second. Now a nak changes only an entry its member still holds.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from plantcrew.bus import connect
from plantcrew.bus.redis import RedisBus
from plantcrew.messages import Capability, Message, Subjects
from tests.bus.test_redis import HOLDING, task
from tests.conftest import REDIS_URL, bus_url_for


async def test_a_late_nak_leaves_the_entry_with_the_member_that_took_it_over() -> None:
    bus = await connect(bus_url_for("redis"))
    assert isinstance(bus, RedisBus)
    started = asyncio.Event()

    async def busy(msg: Message) -> None:
        started.set()
        await asyncio.sleep(60)

    r = Redis.from_url(REDIS_URL)
    try:
        subject = Subjects.tasks(Capability.ACTUATE)
        member = await bus.consume(subject, busy, group="operator", options=HOLDING)
        await bus.publish(task(1, Capability.ACTUATE))
        await asyncio.wait_for(started.wait(), 10)
        entry_id = member.current
        assert entry_id is not None
        # another member takes it over, as XAUTOCLAIM does once it is idle past the claim time
        await r.xclaim(member.key, "operator", "taker", 0, [entry_id], justid=True)

        await member.nak(entry_id, 0.0)  # the first member's nak arrives late

        (pending,) = await r.xpending_range(
            member.key, "operator", min=entry_id, max=entry_id, count=1
        )
        assert pending["consumer"] == b"taker", pending
        assert pending["time_since_delivered"] < member.claim_idle_ms // 2, pending
    finally:
        await r.aclose()
        await bus.close()
