"""How much durable work the whole crew still has, across processes: the runner's pacing.

``Bus.quiesce`` looks at the consumers of its own process. A runner whose crew lives in other
processes asks the broker instead, over a connection of its own (only the bus's public
``settings`` are used): the messages of the namespace's durable subjects that some consumer
group has not yet acknowledged, whether they wait, are being handled or wait for a redelivery.

- NATS: one ``CONSUMER.LIST`` request on the namespace's stream; each consumer's
  ``num_pending`` (not yet delivered) plus ``num_ack_pending`` (delivered, not acknowledged).
- Redis: ``XINFO GROUPS`` of every durable stream (events, dead letters, the tasks of each
  capability) in one pipeline; each group's ``pending`` plus ``lag`` (entries not yet read).

A consumer group that no process serves any more keeps its backlog: the runner then waits its
settle timeout per step and says which group is stuck.
"""

from __future__ import annotations

from typing import Any

import structlog

from plantcrew.bus import Bus
from plantcrew.errors import BusError
from plantcrew.messages import Capability, Subjects
from plantcrew.settings import redacted_url

log = structlog.get_logger("plantcrew.crews.backlog")


class DurableBacklog:
    """Counts unacknowledged durable messages of a broker bus's namespace (see module doc).

    Raises BusError for ``memory://`` (in-process: ``quiesce`` is exact there) or when the
    broker cannot be asked.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.kind = bus.url.split(":", 1)[0]
        if self.kind not in ("nats", "tls", "redis", "rediss"):
            raise BusError(f"no cross-process backlog on {redacted_url(bus.url)}: use a broker bus")
        self._client: Any = None
        self.stuck: dict[str, int] = {}

    async def open(self) -> None:
        settings: Any = getattr(self.bus, "settings", None)
        if settings is None:
            raise BusError(f"bus {redacted_url(self.bus.url)} has no broker settings")
        try:
            if self.kind in ("nats", "tls"):
                import nats

                self._client = await nats.connect(
                    settings.server,
                    name="plantcrew-backlog",
                    connect_timeout=max(1, int(settings.connect_timeout_s)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                )
            else:
                from redis.asyncio import Redis

                self._client = Redis.from_url(
                    settings.server, socket_connect_timeout=settings.connect_timeout_s
                )
                await self._client.ping()
        except Exception as exc:
            where = redacted_url(self.bus.url)
            raise BusError(f"cannot ask {where} for its backlog: {exc!r}") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self.kind in ("nats", "tls"):
            await client.close()
        else:
            await client.aclose()

    async def count(self) -> int:
        """Unacknowledged durable messages over every consumer group (``stuck`` names them).

        Raises BusError when the broker does not answer.
        """
        if self._client is None:
            await self.open()
        try:
            groups = await (self._nats() if self.kind in ("nats", "tls") else self._redis())
        except BusError:
            raise
        except Exception as exc:
            where = redacted_url(self.bus.url)
            raise BusError(f"cannot read the backlog on {where}: {exc!r}") from None
        self.stuck = {name: n for name, n in groups.items() if n}
        return sum(groups.values())

    async def _nats(self) -> dict[str, int]:
        import nats.js.errors

        settings: Any = getattr(self.bus, "settings", None)
        js = self._client.jetstream(timeout=5)
        try:
            infos = await js.consumers_info(settings.stream)
        except nats.js.errors.NotFoundError:
            return {}
        return {i.name: (i.num_pending or 0) + (i.num_ack_pending or 0) for i in infos}

    async def _redis(self) -> dict[str, int]:
        settings: Any = getattr(self.bus, "settings", None)
        subjects = [Subjects.EVENTS, Subjects.DLQ, *(Subjects.tasks(c) for c in Capability)]
        keys = [settings.prefix + s for s in subjects if s != Subjects.tasks(Capability.DETECT)]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.xinfo_groups(key)
            pipe.xinfo_stream(key)
        answers = await pipe.execute(raise_on_error=False)
        out: dict[str, int] = {}
        for i, key in enumerate(keys):
            groups, stream = answers[2 * i], answers[2 * i + 1]
            if isinstance(groups, Exception):
                continue  # no such stream yet: nothing published there
            last = _text(stream.get("last-generated-id")) if isinstance(stream, dict) else None
            for g in groups:
                lag = g.get("lag")
                if lag is None:  # Redis < 7, or a lag Redis cannot tell: compare the ids
                    lag = 0 if _text(g.get("last-delivered-id")) == last else 1
                out[f"{key}/{_text(g['name'])}"] = int(g.get("pending") or 0) + int(lag)
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["DurableBacklog"]
