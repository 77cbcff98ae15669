"""The bus conformance suite: every backend must pass it unchanged (see plantcrew.bus.base)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable

import pytest
from structlog.testing import capture_logs

from plantcrew.bus import Bus, DurableOptions, connect
from plantcrew.bus.base import DEFAULT_MAX_MESSAGE_BYTES
from plantcrew.errors import BusError, MessageTooLarge, ReplyTooLarge
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

FAST = DurableOptions(max_deliver=3, ack_wait_s=2.0, backoff_s=(0.05, 0.1))


@pytest.fixture
async def bus(bus_url: str) -> AsyncIterator[Bus]:
    b = await connect(bus_url)
    yield b
    await b.close()


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``cond()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def telemetry(device: str = "pump1", value: float = 1.0) -> Message:
    reading = Reading(device_id=device, sensor="pressure", value=value, unit="bar", ts=1.0)
    return Message.new(
        TelemetryBatch(device_id=device, readings=[reading]),
        source="test",
        subject=Subjects.telemetry(device),
    )


def task(n: int, capability: Capability = Capability.DIAGNOSE) -> Message:
    payload = Task(task_id=f"t{n}", incident_id="i1", capability=capability)
    return Message.new(payload, source="test", subject=Subjects.tasks(capability))


async def collect_dlq(bus: Bus, into: list[Message]) -> None:
    async def on_dead(msg: Message) -> None:
        into.append(msg)

    await bus.consume(Subjects.DLQ, on_dead, group="dlq-test", options=FAST)


async def test_publish_subscribe_roundtrip(bus: Bus) -> None:
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    await bus.subscribe("telemetry.>", handler)
    await asyncio.sleep(0.1)  # let a remote subscription register
    sent = telemetry()
    await bus.publish(sent)
    await until(lambda: len(got) == 1)
    assert got[0] == sent


async def test_wildcards_match_tokens(bus: Bus) -> None:
    star: list[str] = []
    exact: list[str] = []

    async def on_star(msg: Message) -> None:
        star.append(msg.subject)

    async def on_exact(msg: Message) -> None:
        exact.append(msg.subject)

    await bus.subscribe("telemetry.*", on_star)
    await bus.subscribe("telemetry.pump2", on_exact)
    await asyncio.sleep(0.1)
    for dev in ("pump1", "pump2", "valve9"):
        await bus.publish(telemetry(dev))
    await until(lambda: len(star) == 3 and len(exact) == 1)
    assert sorted(star) == ["telemetry.pump1", "telemetry.pump2", "telemetry.valve9"]
    assert exact == ["telemetry.pump2"]


async def test_queue_group_shares_plain_messages(bus: Bus) -> None:
    seen: dict[str, list[float]] = {"a": [], "b": []}

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(msg: Message) -> None:
            assert isinstance(msg.payload, TelemetryBatch)
            seen[name].append(msg.payload.readings[0].value)
            await asyncio.sleep(0.01)

        return handler

    await bus.subscribe("telemetry.>", handler_for("a"), queue="monitor")
    await bus.subscribe("telemetry.>", handler_for("b"), queue="monitor")
    await asyncio.sleep(0.1)
    for i in range(20):
        await bus.publish(telemetry(value=float(i)))
    await until(lambda: len(seen["a"]) + len(seen["b"]) == 20)
    await asyncio.sleep(0.2)
    assert sorted(seen["a"] + seen["b"]) == [float(i) for i in range(20)]  # each once
    assert seen["a"] and seen["b"]  # both members did work


async def test_request_reply(bus: Bus) -> None:
    async def responder(msg: Message) -> Message:
        hb = AgentHeartbeat(
            agent_id="diag-1", role="diagnostic", capabilities=[Capability.DIAGNOSE]
        )
        return msg.reply(hb, source="diag-1", subject="crew.control")

    await bus.subscribe("crew.control", responder, queue="responders")
    await asyncio.sleep(0.1)
    ping = Message.new(
        AgentHeartbeat(agent_id="coord", role="coordinator", capabilities=[]),
        source="coord",
        subject="crew.control",
        correlation_id="run-1",
    )
    reply = await bus.request(ping, timeout=5.0)
    assert reply.causation_id == ping.id
    assert reply.correlation_id == "run-1"
    assert isinstance(reply.payload, AgentHeartbeat) and reply.payload.agent_id == "diag-1"


async def test_durable_delivers_messages_published_before_consumer(bus: Bus) -> None:
    sent = [task(i) for i in range(5)]
    for m in sent:
        await bus.publish(m)
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    await bus.consume(Subjects.tasks(Capability.DIAGNOSE), handler, group="diagnose", options=FAST)
    await until(lambda: len(got) == 5)
    assert [m.id for m in got] == [m.id for m in sent]  # in publish order


async def test_durable_redelivers_until_handler_succeeds(bus: Bus) -> None:
    attempts: list[int] = []

    async def flaky(msg: Message) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("database busy")

    await bus.consume(Subjects.tasks(Capability.REVIEW), flaky, group="review", options=FAST)
    await bus.publish(task(1, Capability.REVIEW))
    await until(lambda: len(attempts) == 3)
    await asyncio.sleep(0.5)
    assert len(attempts) == 3  # acknowledged on success, not delivered again


async def test_durable_dead_letters_after_max_deliveries_with_reason(bus: Bus) -> None:
    dead: list[Message] = []
    await collect_dlq(bus, dead)
    calls: list[int] = []

    async def broken(msg: Message) -> None:
        calls.append(1)
        raise ValueError("no such device 'pump-x'")

    await bus.consume(Subjects.tasks(Capability.ACTUATE), broken, group="actuate", options=FAST)
    poison = task(7, Capability.ACTUATE)
    await bus.publish(poison)
    await until(lambda: len(dead) == 1)
    assert len(calls) == FAST.max_deliver
    letter = dead[0].payload
    assert isinstance(letter, DeadLetter)
    assert letter.original_id == str(poison.id)
    assert "no such device 'pump-x'" in letter.reason
    assert letter.attempts == FAST.max_deliver and not letter.quarantined
    assert Message.from_bytes(letter.raw) == poison  # nothing lost


async def test_poison_message_does_not_block_the_others(bus: Bus) -> None:
    done: list[str] = []

    async def handler(msg: Message) -> None:
        assert isinstance(msg.payload, Task)
        if msg.payload.task_id == "t0":
            raise RuntimeError("poison")
        done.append(msg.payload.task_id)

    await bus.consume(Subjects.tasks(Capability.DIAGNOSE), handler, group="diagnose", options=FAST)
    for i in range(4):
        await bus.publish(task(i))
    await until(lambda: len(done) == 3)
    assert sorted(done) == ["t1", "t2", "t3"]


async def test_publish_dedupes_by_message_id(bus: Bus) -> None:
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    await bus.consume(Subjects.EVENTS, handler, group="coordinator", options=FAST)
    m = task(1)
    again = Message.new(m.payload, source="test", subject=Subjects.EVENTS, id=m.id)
    await bus.publish(again)
    await bus.publish(again)
    await bus.publish(task(2).model_copy(update={"subject": Subjects.EVENTS}))
    await until(lambda: len(got) == 2)
    await asyncio.sleep(0.3)
    assert len(got) == 2


async def test_dedupe_is_per_subject_one_id_on_two_subjects_is_two_messages(bus: Bus) -> None:
    # dedupe drops a publisher's retry of the same publish; the same message id published on
    # another durable subject is another publish (all durable subjects share one JetStream
    # stream on nats://, whose dedupe window is per stream), and a retry of each is dropped
    events: list[Message] = []
    tasks: list[Message] = []

    async def on_event(msg: Message) -> None:
        events.append(msg)

    async def on_task(msg: Message) -> None:
        tasks.append(msg)

    subject = Subjects.tasks(Capability.DIAGNOSE)
    await bus.consume(Subjects.EVENTS, on_event, group="coordinator", options=FAST)
    await bus.consume(subject, on_task, group="diagnose", options=FAST)
    m = task(1)
    for _ in range(2):  # each publish retried once
        await bus.publish(m, Subjects.EVENTS)
        await bus.publish(m, subject)
    await until(lambda: len(events) == 1 and len(tasks) == 1)
    await asyncio.sleep(0.3)
    assert [e.id for e in events] == [m.id] and [t.id for t in tasks] == [m.id]


async def test_durable_group_shares_work_each_message_once(bus: Bus) -> None:
    seen: dict[str, list[str]] = {"w1": [], "w2": []}

    def worker(name: str):  # type: ignore[no-untyped-def]
        async def handler(msg: Message) -> None:
            assert isinstance(msg.payload, Task)
            seen[name].append(msg.payload.task_id)
            await asyncio.sleep(0.02)

        return handler

    subject = Subjects.tasks(Capability.PROPOSE_ACTION)
    await bus.consume(subject, worker("w1"), group="propose", options=FAST)
    await bus.consume(subject, worker("w2"), group="propose", options=FAST)
    for i in range(20):
        await bus.publish(task(i, Capability.PROPOSE_ACTION))
    await until(lambda: len(seen["w1"]) + len(seen["w2"]) == 20)
    await asyncio.sleep(0.3)
    assert sorted(seen["w1"] + seen["w2"]) == sorted(f"t{i}" for i in range(20))
    assert seen["w1"] and seen["w2"]


async def test_stopped_member_hands_back_its_message(bus: Bus) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def slow(msg: Message) -> None:
        started.set()
        await asyncio.sleep(30)

    async def fast(msg: Message) -> None:
        assert isinstance(msg.payload, Task)
        finished.append(msg.payload.task_id)

    subject = Subjects.tasks(Capability.ASSESS_SAFETY)
    first = await bus.consume(subject, slow, group="safety", options=FAST)
    await bus.publish(task(1, Capability.ASSESS_SAFETY))
    await asyncio.wait_for(started.wait(), 10)
    await first.unsubscribe()  # like SIGTERM (or a crash) with the task in flight
    await bus.consume(subject, fast, group="safety", options=FAST)
    await until(lambda: finished == ["t1"], timeout=15)


async def test_ack_wait_expiry_redelivers(bus: Bus) -> None:
    calls: list[float] = []
    opts = DurableOptions(max_deliver=3, ack_wait_s=1.0, backoff_s=(0.05,))

    async def hangs_once(msg: Message) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            await asyncio.sleep(5)

    await bus.consume(Subjects.tasks(Capability.DETECT), hangs_once, group="detect", options=opts)
    await bus.publish(task(1, Capability.DETECT))
    await until(lambda: len(calls) >= 2, timeout=10)
    assert calls[1] - calls[0] >= 0.9


async def test_a_handler_cancelled_from_inside_is_redelivered_and_its_member_goes_on(
    bus: Bus,
) -> None:
    # a handler's own await can end in CancelledError (a task it waited on was cancelled by
    # someone else) while its member is not stopping: that delivery is unacknowledged, so the
    # message comes again, and the member keeps taking work
    opts = DurableOptions(max_deliver=3, ack_wait_s=1.0, backoff_s=(0.05,))
    calls: list[str] = []

    async def cancelled_once(msg: Message) -> None:
        assert isinstance(msg.payload, Task)
        calls.append(msg.payload.task_id)
        if calls.count("t1") == 1 and msg.payload.task_id == "t1":
            raise asyncio.CancelledError

    subject = Subjects.tasks(Capability.DETECT)
    await bus.consume(subject, cancelled_once, group="detect", options=opts)
    await bus.publish(task(1, Capability.DETECT))
    await until(lambda: calls == ["t1"])
    await bus.publish(task(2, Capability.DETECT))
    await until(lambda: calls.count("t1") == 2 and "t2" in calls, timeout=10)
    await asyncio.sleep(0.3)
    assert sorted(calls) == ["t1", "t1", "t2"]


@pytest.mark.parametrize("subject", ["telemetry.pump1", Subjects.EVENTS])
async def test_malformed_bytes_are_quarantined_with_field_names(bus: Bus, subject: str) -> None:
    dead: list[Message] = []
    await collect_dlq(bus, dead)
    good: list[Message] = []

    async def handler(msg: Message) -> None:
        good.append(msg)

    if subject == Subjects.EVENTS:
        await bus.consume(subject, handler, group="coordinator", options=FAST)
    else:
        await bus.subscribe("telemetry.>", handler)
    await asyncio.sleep(0.1)
    bad = telemetry().model_dump(mode="json")
    bad["payload"]["readings"][0]["value"] = "not-a-number"
    import json

    raw = json.dumps(bad).encode()
    await bus.publish_raw(subject, raw)
    await until(lambda: len(dead) == 1)
    letter = dead[0].payload
    assert isinstance(letter, DeadLetter) and letter.quarantined
    assert letter.original_subject == subject  # where it was sent, not the pattern it matched
    assert "payload.telemetry.reading.readings.0.value" in letter.reason
    assert letter.raw.encode() == raw
    assert good == []


# a space, an empty token (inside, first, last, or the whole subject), a wildcard where a
# subject is needed, a character outside [A-Za-z0-9_-], a trailing newline (NATS's protocol
# is line based: a subject ending in one corrupts the connection's command stream), and a
# subject too long (a device id of thousands of characters put the NATS command line over the
# server's max_control_line, 4 kB, and the server closed the connection for good)
BAD_SUBJECTS = [
    "telemetry." + "p" * 300,
    "telemetry.pump 1",
    "telemetry..pump1",
    ".telemetry",
    "crew.tasks.",
    "",
    "telemetry.pümp",
    "telemetry.pump1\n",
    "crew.tasks.diagnose\n",
]
BAD_NAMES = ["two words", "a.b", "g\n", ""]


async def test_bad_subjects_are_refused_alike_before_anything_is_sent(bus: Bus) -> None:
    async def handler(msg: Message) -> None:
        return None

    for subject in [*BAD_SUBJECTS, "telemetry.*", "telemetry.>", "crew.tasks.>"]:
        with pytest.raises(BusError, match="bad subject"):
            await bus.publish(telemetry(), subject)
        with pytest.raises(BusError, match="bad subject"):
            await bus.publish_raw(subject, b"{}")
        with pytest.raises(BusError, match="bad subject"):
            await bus.consume(subject, handler, group="g", options=FAST)
    for pattern in [*BAD_SUBJECTS, "telemetry.>.pump1", "telemetry.pump*"]:
        with pytest.raises(BusError, match="bad subject"):
            await bus.subscribe(pattern, handler)
    for name in BAD_NAMES:
        with pytest.raises(BusError, match="bad group name"):
            await bus.consume(Subjects.EVENTS, handler, group=name, options=FAST)
        with pytest.raises(BusError, match="bad queue group"):
            await bus.subscribe("telemetry.>", handler, queue=name)
    # the bus (its connection, on a broker) is unharmed
    got: list[Message] = []

    async def keep(msg: Message) -> None:
        got.append(msg)

    await bus.subscribe("telemetry.>", keep)
    await asyncio.sleep(0.1)
    await bus.publish(telemetry())
    await until(lambda: len(got) == 1)


async def test_dead_letter_reasons_read_the_same_on_every_backend(bus: Bus) -> None:
    # the reason of the last failed delivery: the exception's type and text (the type alone
    # when it has none), the ack wait that expired, or a handler cancelled from inside while
    # its member goes on (not stopping), worded alike by every backend
    once = DurableOptions(max_deliver=1, ack_wait_s=1.0, backoff_s=(0.05,))
    dead: list[Message] = []
    await collect_dlq(bus, dead)

    async def bare(msg: Message) -> None:
        raise RuntimeError

    async def hangs(msg: Message) -> None:
        await asyncio.sleep(5)

    async def cancelled(msg: Message) -> None:
        raise asyncio.CancelledError

    await bus.consume(Subjects.tasks(Capability.REVIEW), bare, group="review", options=once)
    await bus.consume(Subjects.tasks(Capability.DETECT), hangs, group="detect", options=once)
    safety = Subjects.tasks(Capability.ASSESS_SAFETY)
    await bus.consume(safety, cancelled, group="safety", options=once)
    await bus.publish(task(1, Capability.REVIEW))
    await bus.publish(task(2, Capability.DETECT))
    await bus.publish(task(3, Capability.ASSESS_SAFETY))
    await until(lambda: len(dead) == 3)
    reasons = {}
    for m in dead:
        assert isinstance(m.payload, DeadLetter)
        reasons[m.payload.original_subject] = m.payload.reason
    assert reasons == {
        Subjects.tasks(Capability.REVIEW): "RuntimeError",
        Subjects.tasks(Capability.DETECT): "ack wait of 1.0s expired",
        safety: "handler cancelled",
    }


def sized(total: int, subject: str) -> Message:
    """A task of exactly ``total`` serialized bytes, for ``subject``."""

    def padded(n: int) -> Message:
        payload = Task(
            task_id="t1", incident_id="i1", capability=Capability.DIAGNOSE, input={"b": "x" * n}
        )
        return Message.new(payload, source="test", subject=subject)

    msg = padded(total - len(padded(0).wire_bytes()))
    assert len(msg.wire_bytes()) == total
    return msg


def too_large(size: int, subject: str, limit: int) -> str:
    return (
        f"message of {size} bytes for {subject!r} is over the bus's max_message_bytes "
        f"of {limit} bytes"
    )


async def test_a_message_of_max_message_bytes_goes_one_byte_more_is_refused_alike(
    bus: Bus,
) -> None:
    # the default limit is the same on every backend, and a message of exactly that size goes
    # through even where the broker adds the most (nats://: a long durable subject in a
    # namespace, whose dedupe header counts against the server's max_payload; 200 characters:
    # with the group the JetStream consumer name stays within the server's 255)
    limit = DEFAULT_MAX_MESSAGE_BYTES
    durable = "crew.tasks." + "d" * (200 - len("crew.tasks."))
    got: list[Message] = []
    plain: list[Message] = []

    async def on_task(msg: Message) -> None:
        got.append(msg)

    async def on_plain(msg: Message) -> None:
        plain.append(msg)

    await bus.consume(durable, on_task, group="big", options=FAST)
    await bus.subscribe("telemetry.>", on_plain)
    await asyncio.sleep(0.1)
    over = sized(limit + 1, durable)
    for attempt in (
        lambda: bus.publish(over),
        lambda: bus.publish_raw(durable, over.wire_bytes()),
    ):
        with pytest.raises(MessageTooLarge) as info:
            await attempt()
        assert str(info.value) == too_large(limit + 1, durable, limit)
        exc = info.value
        assert (exc.subject, exc.size, exc.limit) == (durable, limit + 1, limit)
    plain_over = sized(limit + 1, "telemetry.pump1")
    with pytest.raises(MessageTooLarge) as info:
        await bus.publish(plain_over)
    assert str(info.value) == too_large(limit + 1, "telemetry.pump1", limit)
    with pytest.raises(MessageTooLarge):
        await bus.request(sized(limit + 1, "crew.control"), timeout=1.0)
    at_limit = sized(limit, durable)
    await bus.publish(at_limit)
    await bus.publish(sized(limit, "telemetry.pump1"))
    await until(lambda: len(got) == 1 and len(plain) == 1)
    assert got[0] == at_limit  # stored whole; nothing over the limit was sent
    await asyncio.sleep(0.2)
    assert len(got) == 1 and len(plain) == 1


async def test_a_reply_over_max_message_bytes_is_refused_and_the_requester_told_at_once(
    bus: Bus,
) -> None:
    # a responder's reply is held to the limit of a publish: refused before it is sent (on
    # nats://, a reply over the server's max_payload is refused by the client, or closes the
    # connection), and the requester hears it at once (ReplyTooLarge naming the subject, the
    # size and the limit), not as a timeout; the responder logs one line. Before: the reply
    # went through on memory:// and redis://, and nats:// timed out past the server's limit
    limit = bus.max_message_bytes
    sizes = [limit + 1, 2 * 1024 * 1024, limit]
    handled: list[int] = []

    def ping() -> Message:
        hb = AgentHeartbeat(agent_id="coord", role="coordinator", capabilities=[])
        return Message.new(hb, source="coord", subject="crew.control")

    async def responder(msg: Message) -> Message:
        size = sizes[len(handled)]
        handled.append(size)
        return sized(size, "crew.control")

    await bus.subscribe("crew.control", responder)
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        for size in sizes[:2]:
            t0 = loop.time()
            with pytest.raises(ReplyTooLarge) as info:
                await bus.request(ping(), timeout=5.0)
            assert loop.time() - t0 < 2.5  # told, not timed out
            exc = info.value
            assert isinstance(exc, MessageTooLarge)
            assert (exc.subject, exc.size, exc.limit) == ("crew.control", size, limit)
            assert str(exc) == (
                f"reply of {size} bytes to a request on 'crew.control' is over the responder's "
                f"max_message_bytes of {limit} bytes: the request was handled, its reply not sent"
            )
        refused = [e for e in logs if e["event"] == "reply refused"]
    assert [(e["subject"], e["size"], e["limit"]) for e in refused] == [
        ("crew.control", size, limit) for size in sizes[:2]
    ]
    assert all(e["log_level"] == "warning" for e in refused)
    # a reply of exactly the limit still goes (and the connection outlived the refusals)
    reply = await bus.request(ping(), timeout=5.0)
    assert len(reply.wire_bytes()) == limit
    assert handled == sizes


async def test_max_message_bytes_from_the_url_query(bus_url: str) -> None:
    sep = "&" if "?" in bus_url else "?"
    small = await connect(f"{bus_url}{sep}max_message_bytes=4096")
    try:
        got: list[Message] = []

        async def on_plain(msg: Message) -> None:
            got.append(msg)

        await small.subscribe("telemetry.>", on_plain)
        await asyncio.sleep(0.1)
        with pytest.raises(MessageTooLarge) as info:
            await small.publish(sized(4097, "telemetry.pump1"))
        assert str(info.value) == too_large(4097, "telemetry.pump1", 4096)
        with pytest.raises(MessageTooLarge):
            await small.publish_raw("telemetry.pump1", b"x" * 4097)
        ok = sized(4096, "telemetry.pump1")
        await small.publish(ok)
        await until(lambda: got == [ok])
    finally:
        await small.close()
    for bad in ("0", "-1", "1e6", "lots"):
        with pytest.raises(BusError, match=f"max_message_bytes must be .* got {bad!r}"):
            await connect(f"{bus_url}{sep}max_message_bytes={bad}")


PATTERNS = ("telemetry.>", "telemetry.*", "telemetry.pump1")


async def test_a_malformed_plain_message_reaching_several_subscriptions_is_quarantined_once(
    bus: Bus,
) -> None:
    # one bad publish reaches three subscriptions and a queue group of this bus: one letter
    # (before: one per subscription); the same bytes published again are another message
    dead: list[Message] = []
    await collect_dlq(bus, dead)
    good: dict[str, list[Message]] = {}

    def keep(name: str):  # type: ignore[no-untyped-def]
        async def handler(msg: Message) -> None:
            good.setdefault(name, []).append(msg)

        return handler

    for pattern in PATTERNS:
        await bus.subscribe(pattern, keep(pattern))
    for _member in range(2):
        await bus.subscribe("telemetry.>", keep("queue"), queue="monitor")
    await asyncio.sleep(0.1)
    bad = telemetry().model_dump(mode="json")
    bad["payload"]["readings"][0]["value"] = "not-a-number"
    import json

    raw = json.dumps(bad).encode()
    for n in (1, 2):
        await bus.publish_raw("telemetry.pump1", raw)
        await bus.publish(telemetry())  # behind the bad one on every subscription
        await until(lambda n=n: all(len(good.get(k, [])) == n for k in (*PATTERNS, "queue")))
        await until(lambda n=n: len(dead) >= n)
    await asyncio.sleep(0.3)
    assert len(dead) == 2, [m.payload for m in dead]
    for letter in (m.payload for m in dead):
        assert isinstance(letter, DeadLetter) and letter.quarantined
        assert letter.original_subject == "telemetry.pump1" and letter.raw.encode() == raw


async def test_a_long_group_on_a_long_durable_subject_is_delivered_to_one_member_of_it(
    bus: Bus,
) -> None:
    # a group name and a subject of the longest allowed length: on nats:// they make the
    # JetStream consumer's name, which the server caps, so a member must still get its
    # messages (not loop on a consumer that can never be made), and two members of the group
    # must still share one consumer (each message handled once)
    durable = "crew.tasks." + "d" * (255 - len("crew.tasks."))
    group = "g" * 120
    got: list[str] = []

    async def first(msg: Message) -> None:
        got.append(str(msg.id))

    async def second(msg: Message) -> None:
        got.append(str(msg.id))

    await bus.consume(durable, first, group=group, options=FAST)
    await bus.consume(durable, second, group=group, options=FAST)
    sent = [task(i).model_copy(update={"subject": durable}) for i in range(4)]
    for msg in sent:
        await bus.publish(msg)
    await until(lambda: len(got) >= 4)
    await asyncio.sleep(0.3)
    assert sorted(got) == sorted(str(m.id) for m in sent)


async def test_a_handler_that_outlives_its_ack_wait_and_fails_is_not_an_unretrieved_error(
    bus: Bus,
) -> None:
    # the message was redelivered when the ack wait expired, so the late handler's outcome is
    # void; its exception must still be taken (asyncio reports an unretrieved one with a full
    # traceback in the worker's log, which reads like a crash)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    calls = 0
    late_done = asyncio.Event()

    async def slow_then_fail(msg: Message) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            try:
                await asyncio.sleep(FAST.ack_wait_s + 0.5)
                raise RuntimeError("the plant answered too late")
            finally:
                late_done.set()

    try:
        review = Subjects.tasks(Capability.REVIEW)
        await bus.consume(review, slow_then_fail, group="g", options=FAST)
        await bus.publish(task(1, Capability.REVIEW))
        await asyncio.wait_for(late_done.wait(), 10)
        await until(lambda: calls >= 2)  # redelivered and handled
        for _ in range(5):
            await asyncio.sleep(0.05)
            gc.collect()
    finally:
        loop.set_exception_handler(previous)
    never = [c for c in reported if "never retrieved" in str(c.get("message", ""))]
    assert never == [], never
