"""Redis-specific behaviour of ``redis://`` beyond the conformance suite (real server on 6379)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from plantcrew.bus import DurableOptions, connect
from plantcrew.bus.redis import RedisBus, RedisSettings, frame, to_glob, unframe, unframe_queued
from plantcrew.errors import BusError, BusTimeout
from plantcrew.messages import (
    AgentHeartbeat,
    Capability,
    DeadLetter,
    Message,
    Reading,
    Subjects,
    Task,
    TelemetryBatch,
)
from tests.conftest import REDIS_URL, bus_url_for

FAST = DurableOptions(max_deliver=3, ack_wait_s=0.5, backoff_s=(0.05,))


@pytest.fixture
def url() -> str:
    return bus_url_for("redis")


@pytest.fixture
async def bus(url: str) -> AsyncIterator[RedisBus]:
    b = await connect(url)
    assert isinstance(b, RedisBus)
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


def telemetry(subject: str, value: float = 1.0) -> Message:
    reading = Reading(device_id="pump1", sensor="pressure", value=value, unit="bar", ts=1.0)
    batch = TelemetryBatch(device_id="pump1", readings=[reading])
    return Message.new(batch, source="test", subject=subject)


def test_url_query_is_ours_and_stripped() -> None:
    s = RedisSettings.from_url("redis://:pw@10.0.0.1:6379/2?namespace=plantA&maxlen=5000")
    assert s.server == "redis://:pw@10.0.0.1:6379/2"
    assert (s.prefix, s.maxlen) == ("plantA.", 5000)
    with pytest.raises(BusError, match="unknown query") as err:
        RedisSettings.from_url("redis://:secret@h:6379?nmespace=x")
    assert "secret" not in str(err.value)
    with pytest.raises(BusError, match="bad namespace"):
        RedisSettings.from_url("redis://h:6379?namespace=a*b")


def test_glob_covers_pattern_and_frames_round_trip() -> None:
    assert to_glob("NS.telemetry.>") == "NS.telemetry.*"
    assert to_glob("NS.*.pump1") == "NS.*.pump1"
    assert unframe(frame(b'{"a":1}')) == ("", b'{"a":1}')
    assert frame(b'{"a":1}') == b'{"a":1}'  # plain bytes go as they are
    assert unframe(frame(b"x", "NS._inbox.1")) == ("NS._inbox.1", b"x")
    assert unframe(frame(b"\0looks-like-a-frame")) == ("", b"\0looks-like-a-frame")
    assert unframe_queued(frame(b"\0data", "r", "telemetry.p")) == ("telemetry.p", "r", b"\0data")


async def test_star_matches_one_token_only_although_glob_crosses_dots(bus: RedisBus) -> None:
    star: list[str] = []
    rest: list[str] = []

    async def on_star(msg: Message) -> None:
        star.append(msg.subject)

    async def on_rest(msg: Message) -> None:
        rest.append(msg.subject)

    await bus.subscribe("telemetry.*", on_star)
    await bus.subscribe("telemetry.>", on_rest)
    for subject in ("telemetry.pump1.motor", "telemetry.pump1"):
        await bus.publish(telemetry(subject))
    await until(lambda: len(rest) == 2)
    await asyncio.sleep(0.2)
    assert star == ["telemetry.pump1"]
    assert sorted(rest) == ["telemetry.pump1", "telemetry.pump1.motor"]


async def test_a_request_nobody_subscribes_to_says_so_at_once_as_on_nats(bus: RedisBus) -> None:
    """PUBLISH reached no subscriber and no queue group: BusTimeout "no responder" without
    waiting out the timeout (the presence probe of a local run relies on it); once someone
    answers, the request gets its reply."""
    ping = Message.new(
        AgentHeartbeat(agent_id="probe", role="probe", capabilities=[]),
        source="probe", subject="crew.presence",
    )  # fmt: skip
    with pytest.raises(BusTimeout, match=r"no responder on 'crew\.presence'"):
        await bus.request(ping, timeout=60.0)

    async def answer(msg: Message) -> Message:
        return msg.reply(msg.payload, source="crew", subject="crew.presence")

    await bus.subscribe("crew.presence", answer)
    assert (await bus.request(ping, timeout=60.0)).causation_id == ping.id


async def test_queue_group_spans_processes(url: str) -> None:
    """Members on separate connections (as separate processes) share a queue group."""
    a, b, producer = await connect(url), await connect(url), await connect(url)
    seen: dict[str, list[float]] = {"a": [], "b": []}

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(msg: Message) -> None:
            assert isinstance(msg.payload, TelemetryBatch)
            seen[name].append(msg.payload.readings[0].value)
            await asyncio.sleep(0.01)

        return handler

    try:
        await a.subscribe("telemetry.>", handler_for("a"), queue="monitor")
        await b.subscribe("telemetry.>", handler_for("b"), queue="monitor")
        await asyncio.sleep(0.2)  # the producer hears the announcement on the control channel
        for i in range(20):
            await producer.publish(telemetry("telemetry.pump1", float(i)))
        await until(lambda: len(seen["a"]) + len(seen["b"]) == 20)
        await asyncio.sleep(0.2)
        assert sorted(seen["a"] + seen["b"]) == [float(i) for i in range(20)]
        assert seen["a"] and seen["b"]
    finally:
        for bus in (a, b, producer):
            await bus.close()


async def test_entries_of_a_crashed_member_are_claimed_by_another(url: str) -> None:
    crashing = await connect(url)
    assert isinstance(crashing, RedisBus)
    started = asyncio.Event()

    async def hang(msg: Message) -> None:
        started.set()
        await asyncio.sleep(60)

    subject = Subjects.tasks(Capability.ASSESS_SAFETY)
    await crashing.consume(subject, hang, group="safety", options=FAST)
    sent = task(3, Capability.ASSESS_SAFETY)
    await crashing.publish(sent)
    await asyncio.wait_for(started.wait(), 10)
    member = crashing._members[0]
    assert member.task is not None and member.handling is not None
    member.task.cancel()  # crash: nothing is handed back
    member.handling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await member.task
    crashing._members.clear()
    await crashing.close()

    survivor = await connect(url)
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    try:
        await survivor.consume(subject, handler, group="safety", options=FAST)
        await until(lambda: got == [sent], timeout=10)  # after the ack wait, via XAUTOCLAIM
    finally:
        await survivor.close()


HOLDING = DurableOptions(max_deliver=3, ack_wait_s=60.0, backoff_s=(0.05,))
"""An ack wait longer than any test: a busy member stays in its one delivery. (With
``FAST``'s 0.5 s, a test slower than that on a busy machine saw the member give up its task,
read on, and take entries the test meant it to hold.)"""


async def busy_review_member(bus: RedisBus) -> Any:
    """A member of group ``review`` whose handler is busy (30 s) with one task, and which
    reads nothing else meanwhile (its ack wait: :data:`HOLDING`)."""
    started = asyncio.Event()

    async def slow(msg: Message) -> None:
        started.set()
        await asyncio.sleep(30)

    member = await bus.consume(
        Subjects.tasks(Capability.REVIEW), slow, group="review", options=HOLDING
    )
    await bus.publish(task(1, Capability.REVIEW))
    await asyncio.wait_for(started.wait(), 10)
    return member


async def test_stopped_member_removes_its_consumer(bus: RedisBus) -> None:
    member = await busy_review_member(bus)
    await member.unsubscribe()
    r = Redis.from_url(REDIS_URL)
    try:
        consumers = await r.xinfo_consumers(member.key, "review")
    finally:
        await r.aclose()
    names = {c["name"].decode() if isinstance(c["name"], bytes) else c["name"] for c in consumers}
    assert member.name not in names  # no consumer left behind per stopped worker
    assert {c["pending"] for c in consumers} == {1}  # the task waits, claimable, in _handback


async def test_a_stopped_member_hands_back_every_pending_entry_however_many(
    bus: RedisBus,
) -> None:
    # a member can hold many entries (each failed delivery waits out its backoff in the
    # member's pending list); stopping hands them all back before its consumer is deleted,
    # which would drop whatever it still held
    member = await busy_review_member(bus)
    extra = 10_050
    r = Redis.from_url(REDIS_URL)
    try:
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(extra):
                pipe.xadd(member.key, {"d": b"held"})
            await pipe.execute()
        await r.xreadgroup("review", member.name, {member.key: ">"}, count=2 * extra)
        await member.unsubscribe()
        summary = await r.xpending(member.key, "review")
    finally:
        await r.aclose()
    held = {
        (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): c["pending"]
        for c in summary["consumers"]
    }
    assert held == {"_handback": extra + 1}


async def test_dedupe_window_is_the_configured_one(url: str) -> None:
    short = await connect(url + "&dedupe_window=0.5")
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    try:
        await short.consume(Subjects.EVENTS, handler, group="coordinator", options=FAST)
        m = task(1).model_copy(update={"subject": Subjects.EVENTS})
        await short.publish(m)
        await short.publish(m)  # inside the window: dropped
        await until(lambda: len(got) == 1)
        await asyncio.sleep(0.7)
        await short.publish(m)  # past the window: a new message as far as Redis knows
        await until(lambda: len(got) == 2)
    finally:
        await short.close()


async def test_sync_always_checks_the_servers_fsync_policy(url: str) -> None:
    r = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        aof = (await r.config_get("appendonly"))["appendonly"]
        fsync = (await r.config_get("appendfsync"))["appendfsync"]
    finally:
        await r.aclose()
    if (aof, fsync) == ("yes", "always"):
        bus = await connect(url + "&sync=always")
        await bus.close()
    else:
        with pytest.raises(BusError, match="appendfsync"):
            await connect(url + "&sync=always")


async def test_dead_letter_of_raw_bytes_starting_with_nul(bus: RedisBus) -> None:
    dead: list[Message] = []

    async def on_dead(msg: Message) -> None:
        dead.append(msg)

    async def handler(msg: Message) -> None:
        raise AssertionError("invalid bytes reached a handler")

    await bus.consume(Subjects.DLQ, on_dead, group="dlq", options=FAST)
    await bus.subscribe("telemetry.>", handler)
    await bus.publish_raw("telemetry.pump1", b"\0not json")
    await until(lambda: len(dead) == 1)
    letter = dead[0].payload
    assert isinstance(letter, DeadLetter) and letter.quarantined
    assert letter.raw == "\0not json"


async def test_quiesce_sees_outstanding_durable_and_queued_work(bus: RedisBus) -> None:
    release = asyncio.Event()

    async def slow(msg: Message) -> None:
        await release.wait()

    await bus.consume(
        Subjects.tasks(Capability.REVIEW),
        slow,
        group="review",
        options=DurableOptions(max_deliver=3, ack_wait_s=30),
    )
    await bus.subscribe("telemetry.>", slow, queue="monitor")
    await bus.publish(task(1, Capability.REVIEW))
    await bus.publish(telemetry("telemetry.pump1"))
    assert await bus.quiesce(timeout=0.5) is False
    release.set()
    assert await bus.quiesce(timeout=10) is True


async def test_trimming_keeps_what_a_group_has_not_acknowledged(url: str) -> None:
    """``maxlen`` bounds the history, not a group's backlog: entries pending in a member or not
    yet delivered to a lagging group are kept until acknowledged, then trimmed."""
    bus = await connect(url + "&maxlen=10")
    assert isinstance(bus, RedisBus)
    started, release = asyncio.Event(), asyncio.Event()
    handled: set[str] = set()

    async def handler(msg: Message) -> None:
        assert isinstance(msg.payload, Task)
        if msg.payload.task_id == "t0":
            started.set()
            await release.wait()
        handled.add(msg.payload.task_id)

    subject = Subjects.tasks(Capability.DIAGNOSE)
    slow = DurableOptions(max_deliver=3, ack_wait_s=30, backoff_s=(0.05,))
    try:
        await bus.consume(subject, handler, group="diag", options=slow)
        await bus.publish(task(0))
        await asyncio.wait_for(started.wait(), 10)
        for i in range(1, 300):  # t0 pending, the rest not yet delivered: 30 x maxlen behind
            await bus.publish(task(i))
        release.set()
        await until(lambda: len(handled) == 300, timeout=30)
        assert handled == {f"t{i}" for i in range(300)}
        await bus.publish(task(300))  # everything acknowledged: trimmed to about maxlen again
        await until(lambda: len(handled) == 301)
        r = Redis.from_url(REDIS_URL)
        try:
            # approximate trimming drops whole stream nodes (at most 100 entries each)
            assert await r.xlen(bus.settings.prefix + subject) <= 10 + 100
        finally:
            await r.aclose()
    finally:
        await bus.close()
