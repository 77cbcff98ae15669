"""Instructions per plain NATS message, ours vs raw nats-py (a benchmark, not a test).

Wall-clock rates are noise on a shared machine; instruction counts are not. This script sends
``--n`` telemetry messages one way (``--mode``) and waits until the last is delivered. Under
callgrind (``--instr``) it calls ``getppid()`` right before the first publish and right after
the last delivery, and callgrind (``--dump-before=getppid``) dumps its counts there: the
middle dump holds the instructions of this process for the ``n`` messages alone (start-up,
imports, connecting and building the messages are in the other dumps; the built messages are
frozen out of the garbage collector's passes, see ``run``).

Modes, as in ``bench/bus.py`` (one process, one event loop, the NATS server elsewhere):

- ``raw``: nats-py publishes ``msg.to_bytes()`` (made beforehand) to a callback subscription.
- ``floor``: nats-py publishes each prebuilt ``Message`` serialized by pydantic; the callback
  validates the bytes into a ``Message``.
- ``ours``: ``bus.publish(msg)`` on ``nats://`` to a ``bus.subscribe("telemetry.>")`` handler.

Run::

    python bench/bus_instructions.py --instr [--modes raw,floor,ours] [--n 5000]

It needs valgrind; it prints the command and instructions per message for each mode.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable

import nats
from nats.aio.msg import Msg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bus import telemetry

from plantcrew.bus import connect
from plantcrew.messages import Message

MODES = ("raw", "floor", "ours")


async def measured(n: int, send: Callable[[int], Awaitable[None]], done: asyncio.Event) -> None:
    """Send ``n`` messages and wait for the last delivery, between two callgrind dumps."""
    os.getppid()  # callgrind dumps here (--dump-before=getppid)
    for i in range(n):
        await send(i)
    await asyncio.wait_for(done.wait(), timeout=600)
    os.getppid()


async def run(mode: str, n: int, server: str) -> None:
    """Send ``n`` prebuilt telemetry messages by ``mode`` (see the module doc)."""
    msgs = [telemetry(i) for i in range(n)]  # without kept bytes, as in bench/bus.py
    # the prebuilt messages are the benchmark's, not the path's: keep them out of the garbage
    # collector's full passes, whose cost inside the window would depend on when they fall
    gc.collect()
    gc.freeze()
    count = 0
    done = asyncio.Event()

    def seen() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    if mode == "ours":
        bus = await connect(f"{server}?namespace=instr{uuid.uuid4().hex[:8]}")

        async def on_msg(msg: Message) -> None:
            seen()

        await bus.subscribe("telemetry.>", on_msg)
        await asyncio.sleep(0.2)

        async def publish(i: int) -> None:
            await bus.publish(msgs[i])

        await measured(n, publish, done)
        await bus.close()
        return
    nc = await nats.connect(server)
    subject = f"instr{uuid.uuid4().hex[:8]}.telemetry.pump1"
    if mode == "floor":
        to_json = Message.__pydantic_serializer__.to_json
        validate = Message.__pydantic_validator__.validate_json

        async def checked(msg: Msg) -> None:
            validate(msg.data)
            seen()

        async def send(i: int) -> None:
            await nc.publish(subject, to_json(msgs[i]))

        await nc.subscribe(subject, cb=checked)
    else:
        data = [m.to_bytes() for m in msgs]

        async def cb(msg: Msg) -> None:
            seen()

        async def send(i: int) -> None:
            await nc.publish(subject, data[i])

        await nc.subscribe(subject, cb=cb)
    await nc.flush()
    await measured(n, send, done)
    await nc.close()


def instructions(mode: str, n: int, server: str) -> int:
    """Instructions (callgrind's Ir) this script spends on ``n`` messages in ``mode``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", "--dump-before=getppid"]
        cmd += [f"--callgrind-out-file={out}", sys.executable, __file__]
        cmd += ["--modes", mode, "--n", str(n), "--nats", server]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        dumps = sorted(glob.glob(out + ".*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        if len(dumps) < 2:
            raise SystemExit(f"expected callgrind dumps at the markers, found {dumps}")
        with open(dumps[1]) as f:  # .1: start-up to the first marker; .2: the messages
            found = re.search(r"^totals: (\d+)", f.read(), re.M)
        if found is None:
            raise SystemExit(f"no totals line in {dumps[1]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help="of raw, floor, ours")
    parser.add_argument("--n", type=int, default=5000, help="messages per mode")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--instr", action="store_true", help="count, under callgrind")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if bad := set(modes) - set(MODES):
        parser.error(f"unknown mode(s) {sorted(bad)}")
    if not args.instr:
        for mode in modes:
            asyncio.run(run(mode, args.n, args.nats))
        return
    print(f"command: cd {shlex.quote(os.getcwd())} && {shlex.join([sys.executable, *sys.argv])}")
    per = {mode: instructions(mode, args.n, args.nats) / args.n for mode in modes}
    for mode, ir in per.items():
        print(f"{mode:<6} {ir:>9,.0f} instructions per message (n={args.n})")
    if "raw" in per:
        for mode in modes:
            print(f"raw / {mode}: {per['raw'] / per[mode]:.0%} (instruction ratio)")


if __name__ == "__main__":
    main()
