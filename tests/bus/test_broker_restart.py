"""Fault tests: kill the broker (SIGKILL) mid-stream, restart it on the same data, and check
that no acknowledged durable message is lost and that consumers and subscribers carry on.

Each test starts its OWN server on a free loopback port with its own data directory (the
shared servers on 4222/6379 serve other test runs), and always stops it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plantcrew.bus import Bus, DurableOptions, connect
from plantcrew.errors import BusError
from plantcrew.messages import Capability, Message, Reading, Subjects, Task, TelemetryBatch

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
OPTS = DurableOptions(max_deliver=5, ack_wait_s=2.0, backoff_s=(0.05, 0.2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A broker process of our own that the test can kill and start again on the same data."""

    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.argv[0]} did not listen on {self.port} within 10s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def nats_broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(NATS_SERVER).exists():
        pytest.skip(f"nats-server not found at {NATS_SERVER}")
    port = free_port()
    store = tmp_path / "js"
    argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
    broker = Broker(argv, port)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip(f"redis-server not found at {REDIS_SERVER}")
    port = free_port()
    argv = [
        REDIS_SERVER,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--dir", str(tmp_path),
    ]  # fmt: skip
    broker = Broker(argv, port)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture(params=["nats", "redis"])
def broker_url(
    request: pytest.FixtureRequest,
) -> tuple[Broker, str]:
    broker: Broker = request.getfixturevalue(f"{request.param}_broker")
    return broker, f"{request.param}://127.0.0.1:{broker.port}?namespace=restart"


def task(n: int) -> Message:
    payload = Task(task_id=f"t{n}", incident_id="i1", capability=Capability.DIAGNOSE)
    return Message.new(payload, source="test", subject=Subjects.tasks(Capability.DIAGNOSE))


def telemetry(value: float) -> Message:
    reading = Reading(device_id="pump1", sensor="pressure", value=value, unit="bar", ts=1.0)
    batch = TelemetryBatch(device_id="pump1", readings=[reading])
    return Message.new(batch, source="test", subject=Subjects.telemetry("pump1"))


async def until(cond: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def restart(broker: Broker, down_s: float = 0.5) -> None:
    broker.kill()
    await asyncio.sleep(down_s)
    await asyncio.to_thread(broker.start)


async def test_no_acknowledged_durable_message_lost_across_restart(
    broker_url: tuple[Broker, str],
) -> None:
    broker, url = broker_url
    bus: Bus = await connect(url)
    handled: set[str] = set()

    async def handler(msg: Message) -> None:
        assert isinstance(msg.payload, Task)
        handled.add(msg.payload.task_id)

    try:
        await bus.consume(Subjects.tasks(Capability.DIAGNOSE), handler, group="diag", options=OPTS)
        acked: list[str] = []
        refused = 0
        for i in range(120):
            if i == 40:
                await restart(broker)  # mid-stream; some of what follows hits the outage
            try:
                await bus.publish(task(i))
            except BusError:
                refused += 1  # not acknowledged: the caller knows and may retry
                continue
            acked.append(f"t{i}")
        assert len(acked) >= 100, f"only {len(acked)} publishes acknowledged ({refused} refused)"
        # the consumer reconnected and carries on: everything acknowledged is handled
        await until(lambda: set(acked) <= handled, timeout=30)
    finally:
        await bus.close()


async def test_consumer_gets_messages_stored_while_it_was_cut_off(
    broker_url: tuple[Broker, str],
) -> None:
    broker, url = broker_url
    producer: Bus = await connect(url)
    consumer: Bus = await connect(url)
    handled: list[str] = []

    async def handler(msg: Message) -> None:
        assert isinstance(msg.payload, Task)
        handled.append(msg.payload.task_id)

    try:
        await consumer.consume(
            Subjects.tasks(Capability.DIAGNOSE), handler, group="diag", options=OPTS
        )
        for i in range(10):
            await producer.publish(task(i))
        await until(lambda: len(set(handled)) == 10, timeout=15)
        await restart(broker)
        for i in range(10, 20):
            await producer.publish(task(i))  # retried through the reconnect, then stored
        await until(lambda: set(handled) == {f"t{i}" for i in range(20)}, timeout=30)
    finally:
        await producer.close()
        await consumer.close()


async def test_plain_subscription_resumes_after_restart(broker_url: tuple[Broker, str]) -> None:
    broker, url = broker_url
    bus: Bus = await connect(url)
    got: list[float] = []

    async def handler(msg: Message) -> None:
        assert isinstance(msg.payload, TelemetryBatch)
        got.append(msg.payload.readings[0].value)

    try:
        await bus.subscribe("telemetry.>", handler)
        await asyncio.sleep(0.1)
        await bus.publish(telemetry(1.0))
        await until(lambda: got == [1.0], timeout=10)
        await restart(broker)
        # plain subjects are at most once: keep sending until the resubscription is live
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while 2.0 not in got:
            assert loop.time() < end, "subscription did not resume within 20s"
            with contextlib.suppress(BusError):
                await bus.publish(telemetry(2.0))
            await asyncio.sleep(0.2)
    finally:
        await bus.close()


async def test_unreachable_broker_is_a_clean_bus_error() -> None:
    port = free_port()  # nothing listens here
    for scheme in ("nats", "redis"):
        with pytest.raises(BusError, match=f"127.0.0.1:{port}"):
            await connect(f"{scheme}://127.0.0.1:{port}?connect_timeout=1")


async def test_a_publish_through_a_restart_is_stored_once(broker_url: tuple[Broker, str]) -> None:
    """A durable publish retries through the outage under one dedupe id: however many of its
    attempts the client buffered while the broker was down, the message is stored once (a
    message's own id, or for ``publish_raw`` one fresh id per call)."""
    broker, url = broker_url
    bus: Bus = await connect(url)
    handled: list[str] = []

    async def handler(msg: Message) -> None:
        assert isinstance(msg.payload, Task)
        handled.append(msg.payload.task_id)

    try:
        await bus.consume(Subjects.tasks(Capability.DIAGNOSE), handler, group="diag", options=OPTS)
        broker.kill()
        await asyncio.sleep(0.5)  # the client has seen the connection drop
        # down for two attempts' waits (2 s each): the client buffers each attempt meanwhile
        restarted = asyncio.create_task(restart(broker, down_s=4.5))
        subject = Subjects.tasks(Capability.DIAGNOSE)
        await asyncio.gather(bus.publish(task(1)), bus.publish_raw(subject, task(2).wire_bytes()))
        await restarted
        await until(lambda: {"t1", "t2"} <= set(handled), timeout=30)
        assert await bus.quiesce(timeout=10)
        assert sorted(handled) == ["t1", "t2"]
    finally:
        await bus.close()


async def test_a_publish_during_an_outage_names_it_and_close_is_clean(
    broker_url: tuple[Broker, str],
) -> None:
    broker, url = broker_url
    bus: Bus = await connect(url + "&publish_timeout=1")
    try:
        await bus.publish(task(1))
        broker.kill()
        with pytest.raises(BusError, match=r"crew\.tasks\.diagnose.*the connection is down"):
            await bus.publish(task(2))
        with contextlib.suppress(BusError):  # plain: buffered or refused, at most once
            await bus.publish(telemetry(1.0))
    finally:
        await bus.close()  # no error while the broker is still down
