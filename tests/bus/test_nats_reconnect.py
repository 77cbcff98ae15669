"""``nats://`` through a silent network partition long enough that the client calls its
connection stale and reconnects (the real server on 4222, reached through a
:class:`tests.forwarder.Forwarder`)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

from plantcrew.bus import DurableOptions, connect
from plantcrew.bus.nats import NatsBus
from plantcrew.messages import Capability, Message, Subjects, Task
from tests.conftest import NATS_URL, bus_url_for
from tests.forwarder import Forwarder, through

STALE_FAST = "ping_interval=1&max_outstanding_pings=1&connect_timeout=1"
"""Stale after 2 s of silence (the second ping finds one unanswered), 1 s per reconnect try."""
OPTIONS = DurableOptions(max_deliver=3, ack_wait_s=2.0, backoff_s=(0.05,))


async def test_a_member_takes_work_soon_after_a_reconnect_that_lost_its_consumer_probe() -> None:
    """A member that finds nothing to fetch asks the server whether its consumer still exists.
    When the network goes silent just as it asks, the question leaves on a connection the
    client then calls stale and drops: no answer will come. The member must not wait out the
    bus's 10 s request timeout for it after the reconnect, with a task waiting for it.

    Before: the task came 7.3 s after the heal (the probe's 10 s, less the 3 s partition);
    after: 0.6 s (the client's next reconnect try, 0.5 s after the heal, then one fetch).
    """
    host = urlparse(NATS_URL)
    fwd = Forwarder((host.hostname or "127.0.0.1", host.port or 4222))
    fwd.start()
    url = bus_url_for("nats")
    direct = await connect(url)
    member = await connect(through(url, fwd.port) + "&" + STALE_FAST)
    assert isinstance(member, NatsBus)
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    loop = asyncio.get_running_loop()
    try:
        await member.consume(
            Subjects.tasks(Capability.DIAGNOSE), handler, group="g", options=OPTIONS
        )
        # the consumer probe: the member's first empty fetch (2 s) is followed by one
        fwd.partition_on(b"$JS.API.CONSUMER.INFO.", from_client=True)
        assert await asyncio.to_thread(fwd.triggered.wait, 10), "no consumer probe in 10 s"
        nc = member._nc
        assert nc is not None
        reconnects = nc.stats["reconnects"]
        await asyncio.sleep(3.0)  # past stale detection (2 s): the client gave the socket up
        assert not nc.is_connected, "the client did not call the silent connection stale"
        fwd.heal(drop=True)  # the probe is lost with the connection that carried it
        healed = loop.time()
        task = Task(task_id="t1", incident_id="i1", capability=Capability.DIAGNOSE)
        await direct.publish(
            Message.new(task, source="test", subject=Subjects.tasks(task.capability))
        )
        while not got:
            assert loop.time() < healed + 15, "the task never came"
            await asyncio.sleep(0.05)
        took = loop.time() - healed
        assert nc.stats["reconnects"] == reconnects + 1
        assert took < 3.5, f"the task came {took:.1f} s after the heal"
    finally:
        await member.close()
        await direct.close()
        fwd.stop()
