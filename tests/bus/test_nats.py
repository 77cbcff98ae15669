"""NATS-specific behaviour of ``nats://`` beyond the conformance suite (real server on 4222)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.js.api import StorageType

from plantcrew.bus import DurableOptions, connect
from plantcrew.bus.base import DEFAULT_MAX_MESSAGE_BYTES, NATS_HEADER_RESERVE
from plantcrew.bus.nats import NatsBus, NatsSettings
from plantcrew.errors import BusError, BusTimeout
from plantcrew.messages import (
    AgentHeartbeat,
    Capability,
    DeadLetter,
    Message,
    Subjects,
    Task,
)
from tests.conftest import NATS_URL, bus_url_for

FAST = DurableOptions(max_deliver=3, ack_wait_s=1.0, backoff_s=(0.05,))


@pytest.fixture
def url() -> str:
    return bus_url_for("nats")


@pytest.fixture
async def bus(url: str) -> AsyncIterator[NatsBus]:
    b = await connect(url)
    assert isinstance(b, NatsBus)
    yield b
    await b.close()


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def task(n: int, capability: Capability = Capability.DIAGNOSE) -> Message:
    payload = Task(task_id=f"t{n}", incident_id="i1", capability=capability)
    return Message.new(payload, source="test", subject=Subjects.tasks(capability))


def test_url_query_is_ours_and_stripped() -> None:
    s = NatsSettings.from_url("nats://u:pw@10.0.0.1:4222?namespace=plantA&replicas=3&sync=always")
    assert s.server == "nats://u:pw@10.0.0.1:4222"
    assert (s.namespace, s.prefix, s.stream) == ("plantA", "plantA.", "PLANTCREW_plantA")
    assert s.replicas == 3 and s.sync_always
    with pytest.raises(BusError, match="unknown query"):
        NatsSettings.from_url("nats://h:4222?nmespace=x")
    with pytest.raises(BusError, match="bad namespace"):
        NatsSettings.from_url("nats://h:4222?namespace=a.b")
    with pytest.raises(BusError, match="sync"):
        NatsSettings.from_url("nats://h:4222?sync=sometimes")


@pytest.mark.parametrize(
    "query", ["nmespace=x", "namespace=a.b", "sync=sometimes", "replicas=three", "ping_interval=0"]
)
def test_a_bad_url_query_is_refused_without_showing_the_password(query: str) -> None:
    with pytest.raises(BusError) as refused:
        NatsSettings.from_url(f"nats://plant:s3cret-pw@h:4222?{query}")
    assert "s3cret-pw" not in str(refused.value)
    assert "plant:***@h:4222" in str(refused.value), refused.value


async def test_the_ping_settings_of_the_url_reach_the_client(url: str) -> None:
    """How soon a silent partition is noticed: nats-py's own defaults unless the URL says."""
    s = NatsSettings.from_url(url)
    assert (s.ping_interval_s, s.max_outstanding_pings) == (5.0, 3)
    for bad in ("ping_interval=0", "ping_interval=-1", "max_outstanding_pings=0"):
        with pytest.raises(BusError, match="must be above 0"):
            NatsSettings.from_url(f"{url}&{bad}")
    with pytest.raises(BusError, match="bad number"):
        NatsSettings.from_url(f"{url}&max_outstanding_pings=1.5")
    bus = await connect(f"{url}&ping_interval=0.5&max_outstanding_pings=4")
    try:
        assert isinstance(bus, NatsBus) and bus._nc is not None
        options = bus._nc.options
        assert (options["ping_interval"], options["max_outstanding_pings"]) == (0.5, 4)
    finally:
        await bus.close()


async def test_stream_is_file_backed_covers_namespaced_durable_subjects(bus: NatsBus) -> None:
    nc = await nats.connect(NATS_URL)
    try:
        info = await nc.jetstream().stream_info(bus.settings.stream)
    finally:
        await nc.close()
    ns = bus.settings.namespace
    assert info.config.storage == StorageType.FILE
    assert sorted(info.config.subjects or []) == sorted(
        [f"{ns}.crew.events", f"{ns}.crew.tasks.>", f"{ns}.crew.dlq"]
    )
    assert info.config.duplicate_window == pytest.approx(120.0)


async def test_sync_always_is_refused_by_a_server_that_cannot_fsync_every_write(url: str) -> None:
    nc = await nats.connect(NATS_URL)
    version = nc.connected_server_version
    await nc.close()
    if (version.major, version.minor) >= (2, 10):
        bus = await connect(url + "&sync=always")  # the setting itself is the server's config
        await bus.close()
    else:
        with pytest.raises(BusError, match=r"2\.10"):
            await connect(url + "&sync=always")


async def test_namespaces_do_not_see_each_other() -> None:
    a, b = await connect(bus_url_for("nats")), await connect(bus_url_for("nats"))
    got_a: list[Message] = []
    got_b: list[Message] = []

    async def on_a(msg: Message) -> None:
        got_a.append(msg)

    async def on_b(msg: Message) -> None:
        got_b.append(msg)

    try:
        await a.consume(Subjects.EVENTS, on_a, group="coordinator", options=FAST)
        await b.consume(Subjects.EVENTS, on_b, group="coordinator", options=FAST)
        sent = task(1).model_copy(update={"subject": Subjects.EVENTS})
        await a.publish(sent)
        await until(lambda: len(got_a) == 1)
        await asyncio.sleep(0.3)
        assert got_a == [sent] and got_b == []
    finally:
        await a.close()
        await b.close()


async def test_dedupe_is_the_brokers_across_connections(url: str) -> None:
    first, second = await connect(url), await connect(url)
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    try:
        m = task(5)
        await first.publish(m)
        await second.publish(m)  # another process relaying the same outbox row
        await first.consume(m.subject, handler, group="diag", options=FAST)
        await until(lambda: len(got) == 1)
        await asyncio.sleep(0.3)
        assert got == [m]
    finally:
        await first.close()
        await second.close()


async def test_member_that_dies_on_its_last_delivery_is_dead_lettered_by_the_next(
    url: str,
) -> None:
    """A crash (no nak, no ack) on the last allowed delivery must not lose the message: the
    server redelivers after its ack wait and the next member records it in the DLQ."""
    once = DurableOptions(max_deliver=1, ack_wait_s=0.5, backoff_s=(0.05,))
    crashing = await connect(url)
    assert isinstance(crashing, NatsBus)
    started = asyncio.Event()

    async def hang(msg: Message) -> None:
        started.set()
        await asyncio.sleep(60)

    await crashing.consume(Subjects.tasks(Capability.ACTUATE), hang, group="act", options=once)
    poison = task(9, Capability.ACTUATE)
    await crashing.publish(poison)
    await asyncio.wait_for(started.wait(), 10)
    # crash: the process vanishes without handing anything back
    member = crashing._members[0]
    assert member.task is not None
    member.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await member.task
    nc = crashing._nc
    assert nc is not None
    await nc.close()

    survivor = await connect(url)
    dead: list[Message] = []
    handled: list[Message] = []

    async def on_dead(msg: Message) -> None:
        dead.append(msg)

    async def on_task(msg: Message) -> None:
        handled.append(msg)

    try:
        await survivor.consume(Subjects.DLQ, on_dead, group="dlq", options=FAST)
        await survivor.consume(
            Subjects.tasks(Capability.ACTUATE), on_task, group="act", options=once
        )
        await until(lambda: len(dead) == 1, timeout=15)
        letter = dead[0].payload
        assert isinstance(letter, DeadLetter)
        assert letter.original_id == str(poison.id) and not letter.quarantined
        assert "without an acknowledgement" in letter.reason
        assert handled == []  # never run past max_deliver
    finally:
        await survivor.close()


async def test_request_without_responder_is_a_bus_timeout(bus: NatsBus) -> None:
    ping = Message.new(
        AgentHeartbeat(agent_id="coord", role="coordinator", capabilities=[]),
        source="coord",
        subject=Subjects.CONTROL,
    )
    with pytest.raises(BusTimeout):
        await bus.request(ping, timeout=0.5)


async def test_quiesce_sees_outstanding_durable_work(bus: NatsBus) -> None:
    release = asyncio.Event()

    async def slow(msg: Message) -> None:
        await release.wait()

    await bus.consume(
        Subjects.tasks(Capability.REVIEW),
        slow,
        group="review",
        options=DurableOptions(max_deliver=3, ack_wait_s=30),
    )
    await bus.publish(task(1, Capability.REVIEW))
    assert await bus.quiesce(timeout=0.5) is False
    release.set()
    assert await bus.quiesce(timeout=10) is True


async def test_consumer_deleted_on_the_server_is_recreated(bus: NatsBus) -> None:
    """A group's consumer removed on the server (by an operator, or with its stream) comes
    back: a pull from a missing consumer only times out, so the member must notice."""
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    subject = Subjects.tasks(Capability.DIAGNOSE)
    await bus.consume(subject, handler, group="diag", options=FAST)
    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_consumer(bus.settings.stream, "diag__crew_tasks_diagnose")
    finally:
        await nc.close()
    sent = task(1)
    await bus.publish(sent)
    await until(lambda: got == [sent], timeout=20)


async def test_server_ack_wait_follows_a_longer_ack_wait_of_an_existing_group(url: str) -> None:
    """A group's consumer outlives its processes: after ``ack_wait_s`` is raised (config), the
    server must not redeliver to another member a task still inside the new ack wait."""
    first = await connect(url)

    async def quick(msg: Message) -> None:
        return None

    try:
        member = await first.consume(
            Subjects.tasks(Capability.REVIEW),
            quick,
            group="review",
            options=DurableOptions(max_deliver=5, ack_wait_s=1.0),
        )
        await member.unsubscribe()
    finally:
        await first.close()

    bus = await connect(url)
    calls: list[Message] = []
    finished = asyncio.Event()

    async def slow(msg: Message) -> None:
        calls.append(msg)
        await asyncio.sleep(4)  # within the group's ack wait now, past the old one
        finished.set()

    longer = DurableOptions(max_deliver=5, ack_wait_s=10.0)
    try:
        for _ in range(2):  # a second member to take what the server redelivers
            await bus.consume(
                Subjects.tasks(Capability.REVIEW), slow, group="review", options=longer
            )
        sent = task(1, Capability.REVIEW)
        await bus.publish(sent)
        await asyncio.wait_for(finished.wait(), 15)
        assert [m.id for m in calls] == [sent.id]
    finally:
        await bus.close()


async def test_max_message_bytes_must_fit_the_servers_max_payload(url: str) -> None:
    """The server refuses a message over its ``max_payload`` (headers included) by closing the
    connection for good: a ``max_message_bytes`` that would let one through is refused at
    connect, naming both; unset, the bus takes the default, which fits a default server."""
    probe = await nats.connect(NATS_URL)
    max_payload = probe.max_payload
    await probe.close()
    fits = max_payload - NATS_HEADER_RESERVE
    with pytest.raises(
        BusError,
        match=rf"max_message_bytes={fits + 1} .* max_payload of {max_payload} .* at most {fits}",
    ):
        await connect(f"{url}&max_message_bytes={fits + 1}")
    ok = await connect(f"{url}&max_message_bytes={fits}")
    assert isinstance(ok, NatsBus) and ok.max_message_bytes == fits
    await ok.close()
    default = await connect(url)
    assert isinstance(default, NatsBus)
    assert default.max_message_bytes == min(DEFAULT_MAX_MESSAGE_BYTES, fits)
    await default.close()


async def test_the_members_of_a_group_in_one_process_share_their_pull_requests(
    bus: NatsBus,
) -> None:
    """Each member pulled for itself (a pull request per member, again every 2 s while idle,
    and one per message): the 32 event consumers of a Coordinator kept nats-server busy doing
    nothing. The members of a process now ask together, for as many as wait."""
    pulls: list[bytes] = []
    nc = bus._nc
    assert nc is not None
    publish = nc.publish

    async def counted(subject: str, payload: bytes = b"", reply: str = "", headers=None):  # type: ignore[no-untyped-def]
        if ".CONSUMER.MSG.NEXT." in subject:
            pulls.append(payload)
        await publish(subject, payload, reply, headers)

    nc.publish = counted  # type: ignore[method-assign]
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    members = 8
    for _ in range(members):
        await bus.consume(Subjects.tasks(Capability.DIAGNOSE), handler, group="g", options=FAST)
    await until(lambda: len(pulls) > 0)
    await asyncio.sleep(0.5)  # within the first requests' expiry (2 s)
    assert 0 < len(pulls) < members, pulls
    sent = [task(n) for n in range(40)]
    before = len(pulls)
    for msg in sent:
        await bus.publish(msg)
    await until(lambda: len(got) == len(sent))
    await asyncio.sleep(0.3)
    assert sorted(str(m.id) for m in got) == sorted(str(m.id) for m in sent)  # each once
    assert len(pulls) - before < len(sent), pulls[before:]


async def test_a_stopped_member_leaves_no_request_that_holds_work_from_the_others(
    url: str,
) -> None:
    """Two members in one process, one busy and one waiting; the waiting one stops. What
    was asked for it must not bring the next message to this process, where it would wait
    for the busy member while a member elsewhere is free (a stopping worker's case)."""
    slow = DurableOptions(max_deliver=3, ack_wait_s=60.0, backoff_s=(0.05,))
    here, there = await connect(url), await connect(url)
    release = asyncio.Event()
    got_here: list[Message] = []
    got_there: list[Message] = []

    async def busy(msg: Message) -> None:
        got_here.append(msg)
        await release.wait()

    async def elsewhere(msg: Message) -> None:
        got_there.append(msg)

    subject = Subjects.tasks(Capability.REVIEW)
    try:
        first = await here.consume(subject, busy, group="g", options=slow)
        idle = await here.consume(subject, busy, group="g", options=slow)
        await here.publish(task(1, Capability.REVIEW))
        await until(lambda: len(got_here) == 1)
        await idle.unsubscribe()
        await there.consume(subject, elsewhere, group="g", options=slow)
        await asyncio.sleep(0.3)  # the member elsewhere has asked too
        second = task(2, Capability.REVIEW)
        await here.publish(second)
        await until(lambda: got_there == [second], timeout=15)
        assert len(got_here) == 1
        release.set()
        await first.unsubscribe()
    finally:
        release.set()
        await here.close()
        await there.close()
