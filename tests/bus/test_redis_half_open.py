"""``redis://`` after a connection went half-open: the path a connection took is gone (a NAT or
connection-tracking entry expired during a partition), so its socket stays open but hears
nothing, not even a FIN or an RST, while new connections go through.

The subscriber reaches the real Redis on 6379 through a :class:`tests.forwarder.Forwarder`
that partitions, then heals with ``half_open=True``; the publisher is connected directly.
Checked: the subscriber receives again, a plain message (its pub/sub connection) and a durable
one (its command connections), within :data:`WAIT_S`. Before the fix, the pub/sub reader
polled its dead socket forever: every ``get_message`` came back empty, so nothing said the
connection was gone, and a plain subscriber (a heartbeat watcher, a request's reply inbox)
heard nothing again.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import pytest

from plantcrew.bus import connect
from plantcrew.messages import AgentHeartbeat, Capability, Message, Subjects
from tests.bus.test_redis import FAST, task
from tests.conftest import REDIS_URL, bus_url_for
from tests.forwarder import Forwarder, through

WAIT_S = 60.0
"""The longest the subscriber may stay deaf after the heal (it hears again within about 15 s:
a silent pub/sub connection is pinged after 5 s and dropped 5 s later; a command times out
after the client's socket timeout of 5 s)."""


def heartbeat() -> Message:
    payload = AgentHeartbeat(agent_id="probe", role="probe", capabilities=[])
    return Message.new(payload, source="probe", subject=Subjects.CONTROL)


@pytest.mark.parametrize("kind", ["plain", "durable"])
async def test_a_subscriber_whose_connection_went_half_open_receives_again(kind: str) -> None:
    server = urlparse(REDIS_URL)
    fwd = Forwarder((server.hostname or "127.0.0.1", server.port or 6379))
    fwd.start()
    url = bus_url_for("redis")
    subscriber = await connect(through(url, fwd.port))
    publisher = await connect(url)
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    def sample(n: int) -> Message:
        return heartbeat() if kind == "plain" else task(n)

    loop = asyncio.get_running_loop()
    try:
        if kind == "plain":
            await subscriber.subscribe(Subjects.CONTROL, handler)
        else:
            subject = Subjects.tasks(Capability.DIAGNOSE)  # what task() sends
            await subscriber.consume(subject, handler, group="probe", options=FAST)
        await publisher.publish(sample(0))
        while not got:  # through the forwarder before the partition
            await asyncio.sleep(0.05)
        fwd.partition()
        await asyncio.sleep(2.0)  # the subscriber polls into the partition
        fwd.heal(half_open=True)
        healed_at, n = loop.time(), len(got)
        sent = 0
        while len(got) == n:  # one message a second until one is heard
            assert loop.time() < healed_at + WAIT_S, f"deaf {WAIT_S:g} s after the heal"
            sent += 1
            await publisher.publish(sample(sent))
            await asyncio.sleep(1.0)
    finally:
        fwd.stop()
        await publisher.close()
        await asyncio.wait_for(subscriber.close(), WAIT_S)
