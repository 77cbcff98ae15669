"""Message buses: the ``Bus`` protocol and ``connect(url)`` choosing a backend by URL.

``memory://[NAME]`` (in-process, default), ``nats://host:4222`` (NATS + JetStream) and
``redis://host:6379`` (Redis pub/sub + Streams). A ``?namespace=NAME`` query on a broker URL
prefixes every subject and stream, so several plants or test runs share one broker.
``?max_message_bytes=N`` (every backend; default 1 MiB less 256 bytes for NATS headers) is
the largest message a publish sends: larger ones raise ``MessageTooLarge`` on every backend
alike.
"""

from __future__ import annotations

from urllib.parse import urlparse

from plantcrew.bus.base import (
    Bus,
    DurableOptions,
    Handler,
    Subscription,
    is_durable,
    subject_matches,
)
from plantcrew.errors import BusError
from plantcrew.settings import redacted_url


async def connect(url: str) -> Bus:
    """Open the bus at ``url`` and return it connected.

    Raises BusError for an unknown scheme or a broker that cannot be reached.
    """
    scheme = urlparse(url).scheme
    bus: Bus
    if scheme == "memory":
        from plantcrew.bus.memory import get_memory_bus

        bus = get_memory_bus(url)
    elif scheme in ("nats", "tls"):
        from plantcrew.bus.nats import NatsBus

        bus = NatsBus(url)
    elif scheme in ("redis", "rediss"):
        from plantcrew.bus.redis import RedisBus

        bus = RedisBus(url)
    else:
        raise BusError(
            f"unknown bus URL scheme {scheme!r} in {redacted_url(url)!r}: "
            "use memory://, nats:// or redis://"
        )
    await bus.connect()
    return bus


__all__ = [
    "Bus",
    "DurableOptions",
    "Handler",
    "Subscription",
    "connect",
    "is_durable",
    "subject_matches",
]
