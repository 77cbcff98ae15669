"""What a process asks of nats-server, counted on the client side (benchmarks, not tests).

``install(directory)`` wraps nats-py's ``Client.publish`` (every message a client sends:
core publishes, JetStream publishes, API requests, pull requests, acks) and
``Client._process_msg`` (every message it receives) and classifies each by subject, header
and payload; a daemon thread writes the counts to ``<directory>/<pid>.json`` every 0.2 s, and
at exit. ``read(directory)`` sums every process's file.

Run a program with the counters (the bench's crew processes)::

    python bench/nats_count.py DIR -m plantcrew.cli_processes coordinator ...

Classes sent: ``js_publish`` (a durable publish, Nats-Msg-Id header: the server stores it and
answers a PubAck), ``pull`` (``$JS.API.CONSUMER.MSG.NEXT``), ``consumer_info``,
``api_other`` (any other ``$JS.API`` request), ``ack``, ``ack_sync`` (an ack waiting for the
server's answer), ``nak``, ``ack_other`` (``+WPI``, ``+TERM``), ``core_publish`` (anything
else: telemetry, control, requests, replies). Received: ``js_delivered`` (a JetStream message
to handle), ``status_<code>`` (a pull's status: 408 expired, 404 no messages, 100 idle
heartbeat), ``inbox`` (replies: PubAcks, API answers, request replies), ``core_msg``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

SENT = (
    "js_publish",
    "pull",
    "consumer_info",
    "api_other",
    "ack",
    "ack_sync",
    "nak",
    "ack_other",
    "core_publish",
)
"""The classes of message a client sends, in report order."""


def _sent_class(subject: str, payload: bytes, reply: str, headers: Any) -> str:
    if subject.startswith("$JS.ACK."):
        if payload in (b"", b"+ACK"):
            return "ack_sync" if reply else "ack"
        return "nak" if payload.startswith(b"-NAK") else "ack_other"
    if subject.startswith("$JS.API.CONSUMER.MSG.NEXT."):
        return "pull"
    if subject.startswith("$JS.API.CONSUMER.INFO."):
        return "consumer_info"
    if subject.startswith("$JS.API."):
        return "api_other"
    if headers and "Nats-Msg-Id" in headers:
        return "js_publish"
    return "core_publish"


def _received_class(subject: bytes, reply: bytes, headers: bytes | None) -> str:
    if reply.startswith(b"$JS.ACK."):
        return "js_delivered"
    if headers and headers.startswith(b"NATS/1.0 "):
        return "status_" + headers[9:12].decode("ascii", "replace")
    if subject.startswith(b"_INBOX."):
        return "inbox"
    return "core_msg"


def install(directory: str | Path) -> Counter[str]:
    """Count this process's NATS traffic into ``directory`` (see the module doc); returns the
    live counter (keys ``sent.<class>`` and ``received.<class>``)."""
    from nats.aio.client import Client

    counts: Counter[str] = Counter()
    path = Path(directory) / f"{os.getpid()}.json"
    publish, process = Client.publish, Client._process_msg

    async def counted_publish(
        self: Any, subject: str, payload: bytes = b"", reply: str = "", headers: Any = None
    ) -> None:
        counts["sent." + _sent_class(subject, payload, reply, headers)] += 1
        await publish(self, subject, payload, reply, headers)

    async def counted_process(
        self: Any, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> None:
        counts["received." + _received_class(subject, reply, headers)] += 1
        await process(self, sid, subject, reply, data, headers)

    Client.publish = counted_publish  # type: ignore[method-assign]
    Client._process_msg = counted_process  # type: ignore[method-assign]

    def dump() -> None:
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):  # the directory is gone: nobody reads it any more
            tmp.write_text(json.dumps(dict(counts)))
            tmp.replace(path)

    def loop() -> None:
        while True:
            time.sleep(0.2)
            dump()

    threading.Thread(target=loop, name="nats-count", daemon=True).start()
    atexit.register(dump)
    return counts


def read(directory: str | Path) -> Counter[str]:
    """The counts of every process counted into ``directory``, summed."""
    total: Counter[str] = Counter()
    for file in Path(directory).glob("*.json"):
        try:
            total.update(json.loads(file.read_text()))
        except (OSError, ValueError):
            continue  # being replaced: the next read has it
    return total


def main() -> None:
    """``nats_count.py DIR -m MODULE ARGS...``: run MODULE as ``__main__`` with counters."""
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit("usage: nats_count.py DIR -m MODULE [ARGS...]")
    install(sys.argv[1])
    module = sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
