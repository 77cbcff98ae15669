"""Bus benchmark (not a test): validated ``Message``s through each backend vs the raw client.

For every backend it measures, in one process and one event loop:

- plain throughput: ``publish`` N telemetry messages (built and validated beforehand, but not
  serialized: ``publish`` makes their bytes inside the measured loop) to a subscriber;
  messages per second from the first publish to the last validated delivery.
- plain latency: one message at a time, publish to delivery; p50 and p99 in microseconds.
- durable throughput: ``publish`` (stored and acknowledged by the broker) N tasks, consumed by
  one member that acknowledges each; messages per second to the last handled.

Against each broker it runs the raw client (nats-py, redis-py) with the same bytes
(``msg.to_bytes()``) on the same server in the same run: core NATS publish to a callback
subscription; Redis ``PUBLISH`` to a pub/sub reader. The ratio bus/raw is what the backend's
hot path (serialize on publish, validate on receive, dispatch, metrics) costs.

For NATS it also runs the "pydantic floor": the raw nats-py client as above, but publishing
each prebuilt ``Message`` serialized by its own pydantic serializer and validating each
delivery into a ``Message`` in the callback, with nothing else of the bus. floor/raw is what
pydantic alone costs in that loop (more than in isolation, printed last: there its code stays
hot in the CPU's caches); nats:// / floor is what the bus adds on top (subjects, tracing
context, metrics, dispatch, quarantine).

The machine is shared and noisy, so each backend runs ``--repeat`` times (raw and ours
back to back each time) and the report gives the median of the runs, the median of the
per-run ratios ours/raw (the fairest figure: both sides of one ratio saw the same load), the
spread, and the load average before and after. Throughput is given per wall second and per
CPU second of this process: under load the CPU ratio is the steadier estimate of what a quiet
machine shows (one event loop is the bottleneck on both sides).

Run:  /work/venv/bin/python bench/bus.py [--n 100000] [--backends memory,nats,redis]
It prints its figures and the exact command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import nats
from nats.aio.msg import Msg
from redis.asyncio import Redis

from plantcrew.bus import DurableOptions, connect
from plantcrew.messages import Capability, Message, Reading, Subjects, Task, TelemetryBatch

Result = dict[str, float]


def telemetry(i: int) -> Message:
    reading = Reading(device_id="pump1", sensor="pressure", value=float(i), unit="bar", ts=1.0)
    batch = TelemetryBatch(device_id="pump1", readings=[reading])
    return Message.new(batch, source="bench", subject=Subjects.telemetry("pump1"))


def task(i: int) -> Message:
    payload = Task(task_id=f"t{i}", incident_id="bench", capability=Capability.DIAGNOSE)
    return Message.new(payload, source="bench", subject=Subjects.tasks(Capability.DIAGNOSE))


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure_rate(
    n: int, send: Callable[[int], Awaitable[None]], done: asyncio.Event
) -> tuple[float, float]:
    """``(messages per wall second, messages per CPU second of this process)``.

    The second is what a quiet machine would show when this process is the bottleneck (one
    event loop at 100% of a core, as here); on a loaded machine the wall figure also counts
    the time other processes took the CPU from us.
    """
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await send(i)
    await asyncio.wait_for(done.wait(), timeout=120)
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


async def measure_latency(
    rounds: int, send: Callable[[int], Awaitable[None]], arrived: asyncio.Event
) -> tuple[float, float]:
    samples = []
    for i in range(rounds):
        arrived.clear()
        t0 = time.perf_counter()
        await send(i)
        await asyncio.wait_for(arrived.wait(), timeout=10)
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples), pct(samples, 0.99)


# ---- through the bus ---------------------------------------------------------------------
async def bench_bus(url: str, n: int, rounds: int, durable_n: int) -> Result:
    bus = await connect(url)
    msgs = [telemetry(i) for i in range(n)]
    count = 0
    done, arrived = asyncio.Event(), asyncio.Event()

    async def on_msg(msg: Message) -> None:
        nonlocal count
        count += 1
        arrived.set()
        if count == n:
            done.set()

    try:
        await bus.subscribe("telemetry.>", on_msg)
        await asyncio.sleep(0.2)

        async def send(i: int) -> None:
            await bus.publish(msgs[i])

        rate, cpu_rate = await measure_rate(n, send, done)
        count = -10 * n  # latency rounds must not trip ``done``
        p50, p99 = await measure_latency(rounds, send, arrived)

        tasks = [task(i) for i in range(durable_n)]
        handled = 0
        durable_done = asyncio.Event()

        async def on_task(msg: Message) -> None:
            nonlocal handled
            handled += 1
            if handled == durable_n:
                durable_done.set()

        await bus.consume(
            Subjects.tasks(Capability.DIAGNOSE),
            on_task,
            group="bench",
            options=DurableOptions(max_deliver=3, ack_wait_s=30),
        )

        async def store(i: int) -> None:
            await bus.publish(tasks[i])

        durable_rate, _ = await measure_rate(durable_n, store, durable_done)
    finally:
        await bus.close()
    return {
        "plain_msgs_s": rate,
        "plain_msgs_cpu_s": cpu_rate,
        "p50_us": p50,
        "p99_us": p99,
        "durable_msgs_s": durable_rate,
    }


# ---- raw clients, same bytes -------------------------------------------------------------
async def bench_raw_nats(server: str, n: int, rounds: int, *, pydantic: bool = False) -> Result:
    """Core NATS publish to a callback subscription, with nats-py alone.

    With ``pydantic``, the floor under ``nats://``: the same client and loop with nothing of
    the bus but pydantic, as ``bench_bus`` has it: ``publish`` serializes each prebuilt
    ``Message`` (its own serializer) and the callback validates the bytes into a ``Message``.
    """
    nc = await nats.connect(server)
    subject = f"bench{uuid.uuid4().hex[:8]}.telemetry.pump1"
    count = 0
    done, arrived = asyncio.Event(), asyncio.Event()

    async def cb(msg: Msg) -> None:
        nonlocal count
        count += 1
        arrived.set()
        if count == n:
            done.set()

    if pydantic:
        msgs = [telemetry(i) for i in range(n)]
        to_json = Message.__pydantic_serializer__.to_json
        validate = Message.__pydantic_validator__.validate_json

        async def checked(msg: Msg) -> None:
            nonlocal count
            validate(msg.data)
            count += 1
            arrived.set()
            if count == n:
                done.set()

        await nc.subscribe(subject, cb=checked)

        async def send(i: int) -> None:
            await nc.publish(subject, to_json(msgs[i]))

    else:
        data = [telemetry(i).to_bytes() for i in range(n)]
        await nc.subscribe(subject, cb=cb)

        async def send(i: int) -> None:
            await nc.publish(subject, data[i])

    await nc.flush()
    rate, cpu_rate = await measure_rate(n, send, done)
    count = -10 * n
    p50, p99 = await measure_latency(rounds, send, arrived)
    await nc.close()
    return {"plain_msgs_s": rate, "plain_msgs_cpu_s": cpu_rate, "p50_us": p50, "p99_us": p99}


async def bench_raw_redis(server: str, n: int, rounds: int) -> Result:
    r = Redis.from_url(server, protocol=2)
    data = [telemetry(i).to_bytes() for i in range(n)]
    channel = f"bench{uuid.uuid4().hex[:8]}.telemetry.pump1"
    count = 0
    done, arrived = asyncio.Event(), asyncio.Event()
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(channel.rsplit(".", 1)[0] + ".*")

    async def reader() -> None:
        nonlocal count
        while True:
            item = await pubsub.get_message(timeout=1.0)
            if item is not None:
                count += 1
                arrived.set()
                if count == n:
                    done.set()

    reading = asyncio.create_task(reader())
    await asyncio.sleep(0.2)

    async def send(i: int) -> None:
        await r.publish(channel, data[i])

    rate, cpu_rate = await measure_rate(n, send, done)
    count = -10 * n
    p50, p99 = await measure_latency(rounds, send, arrived)
    reading.cancel()
    await pubsub.aclose()
    await r.aclose()
    return {"plain_msgs_s": rate, "plain_msgs_cpu_s": cpu_rate, "p50_us": p50, "p99_us": p99}


async def cleanup(nats_url: str, redis_url: str, namespace: str, backends: list[str]) -> None:
    """Remove the run's JetStream stream and Redis keys."""
    if "nats" in backends:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(f"PLANTCREW_{namespace}")
        except Exception as exc:  # best effort
            print(f"  (cleanup of stream failed: {exc!r})")
        await nc.close()
    if "redis" in backends:
        r = Redis.from_url(redis_url)
        keys = [k async for k in r.scan_iter(match=f"{namespace}.*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


def pydantic_costs(n: int) -> tuple[float, float]:
    """Microseconds per message to serialize (publish) and to validate (receive), in process."""
    msgs = [telemetry(i) for i in range(n)]
    to_json = Message.__pydantic_serializer__.to_json
    validate = Message.__pydantic_validator__.validate_json
    t0 = time.perf_counter()
    data = [to_json(m) for m in msgs]
    t1 = time.perf_counter()
    for d in data:
        validate(d)  # not kept: delivered messages are dropped after the handler
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def line(name: str, res: Result) -> str:
    parts = [f"{name:<16} plain {res['plain_msgs_s']:>10,.0f} msgs/s"]
    parts.append(f"({res['plain_msgs_cpu_s']:>8,.0f} per CPU s)")
    parts.append(f"latency p50 {res['p50_us']:>7.0f} us  p99 {res['p99_us']:>7.0f} us")
    if "durable_msgs_s" in res:
        parts.append(f"durable {res['durable_msgs_s']:>8,.0f} msgs/s")
    return "   ".join(parts)


def median_of(runs: list[Result]) -> Result:
    """Field by field median of several runs of one backend."""
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cpus)"


PAIRS = (
    ("nats://", "raw nats-py"),
    ("pydantic floor", "raw nats-py"),
    ("nats://", "pydantic floor"),
    ("redis://", "raw redis-py"),
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="plain messages per backend")
    parser.add_argument("--durable-n", type=int, default=5_000, help="durable messages")
    parser.add_argument("--rounds", type=int, default=2_000, help="latency round trips")
    parser.add_argument("--backends", default="memory,nats,redis")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians are reported")
    args = parser.parse_args()
    backends = args.backends.split(",")
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    size = len(telemetry(0).to_bytes())
    print(f"command: cd {shlex.quote(os.getcwd())} && {shlex.join([sys.executable, *sys.argv])}")
    print(f"python {sys.version.split()[0]}, one process, one event loop; telemetry {size} B")
    print(f"before: {load()}")
    runs: dict[str, list[Result]] = {}

    def keep(name: str, res: Result) -> None:
        runs.setdefault(name, []).append(res)

    try:
        for run in range(args.repeat):
            for backend in backends:
                if backend == "memory":
                    url = f"memory://{namespace}{run}"
                    keep("memory://", await bench_bus(url, args.n, args.rounds, args.durable_n))
                elif backend == "nats":
                    keep("raw nats-py", await bench_raw_nats(args.nats, args.n, args.rounds))
                    url = f"{args.nats}?namespace={namespace}"
                    keep("nats://", await bench_bus(url, args.n, args.rounds, args.durable_n))
                    floor = await bench_raw_nats(args.nats, args.n, args.rounds, pydantic=True)
                    keep("pydantic floor", floor)
                elif backend == "redis":
                    keep("raw redis-py", await bench_raw_redis(args.redis, args.n, args.rounds))
                    url = f"{args.redis}?namespace={namespace}"
                    keep("redis://", await bench_bus(url, args.n, args.rounds, args.durable_n))
    finally:
        await cleanup(args.nats, args.redis, namespace, backends)
    print(f"after:  {load()}")
    print(f"median of {args.repeat} run(s):")
    for name, res in runs.items():
        print(line(name, median_of(res)))
    for ours, raw in PAIRS:
        if ours in runs and raw in runs:
            for key, what in (("plain_msgs_s", "wall"), ("plain_msgs_cpu_s", "CPU")):
                ratios = [o[key] / r[key] for o, r in zip(runs[ours], runs[raw], strict=True)]
                each = ", ".join(f"{x:.0%}" for x in ratios)
                print(
                    f"{ours} / {raw} plain throughput ({what}): "
                    f"median {statistics.median(ratios):.0%} (runs: {each})"
                )
    ser, val = min(pydantic_costs(args.n) for _ in range(3))
    print(f"pydantic per message, in isolation: serialize {ser:.2f} us, validate {val:.2f} us")


if __name__ == "__main__":
    asyncio.run(main())
