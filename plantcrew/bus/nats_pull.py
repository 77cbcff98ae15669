"""One JetStream pull consumer shared by every member of it in a process (``nats://``).

Each member of a consumer group takes one message at a time (``PullFeed.take``) and settles it
before taking the next. The members of one process do not pull each for itself: their feed
keeps, on the server, requests for at most as many messages as members wait (nothing is
fetched ahead of a free member), and asks again, in one request for all the members waiting,
once what the server still owes is half of them or less (one member: when it owes nothing).
So an idle consumer costs one pull request every ``expiry_s`` per process, not one per
member, and a busy one with n members about one request per n/2 messages. The server serves
a consumer's waiting requests in order, so a delivered message is counted against the oldest
request; a request ends by its 408 (expired: the server's own count of what it still owed is
dropped with it), at ``expiry_s`` plus a grace on the client's clock when that answer was
lost, when the consumer is gone (409), and at a reconnect (the server may have restarted and
lost it; a message it still sends against one is kept for the next free member, never
dropped).

When a request expires while members wait, the feed asks whether the consumer still exists
(``check``, which raises ``nats.js.errors.NotFoundError`` when it does not: a pull from a
deleted consumer only times out); a 409 says so at once. It then makes the consumer again
(``ensure``) and pulls from the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header

from plantcrew.errors import BusError

log = structlog.get_logger("plantcrew.bus.nats")

_GRACE_S = 1.0  # past a request's expiry, the client's clock ends it when its 408 was lost
_RETRY_PAUSE_S = 0.25


class PullFeed:
    """Messages of the durable consumer ``consumer`` of ``stream`` for this process's members.

    ``client()`` is the connection (None once the bus is closed); ``ensure()`` makes the
    consumer when the server lacks it, ``check()`` raises NotFoundError when it is gone (both
    raise the client's errors, which the feed logs and retries after a pause). ``expiry_s``:
    how long a pull request waits on the server for messages.
    """

    def __init__(
        self,
        client: Callable[[], Client | None],
        *,
        stream: str,
        consumer: str,
        api_prefix: str,
        ensure: Callable[[], Awaitable[None]],
        check: Callable[[], Awaitable[None]],
        expiry_s: float,
        transient: tuple[type[Exception], ...],
    ) -> None:
        self.client, self.consumer = client, consumer
        self.ensure, self.check, self.expiry_s = ensure, check, expiry_s
        self.retried: tuple[type[Exception], ...] = (
            *transient,
            nats.js.errors.APIError,
            nats.errors.Error,
        )
        self.next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.members = 0
        """Members using the feed (it is closed with the last one)."""
        self.ready: deque[Msg] = deque()
        """Delivered messages no member waited for (taken first)."""
        self._waiters: deque[asyncio.Future[Msg]] = deque()
        self._pulls: dict[str, list[float]] = {}  # reply subject -> [still owed, ends at]
        self._inbox = ""
        self._sub: Any = None
        self._serial = 0
        self._wake = asyncio.Event()
        self._expired = False  # a request ended while members waited: is the consumer there?
        self._gone = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe the feed's inbox and start pulling for the members that wait."""
        await self._subscribe()
        self._task = asyncio.create_task(self._run(), name=f"nats-feed-{self.consumer}")

    async def _subscribe(self) -> None:
        nc = self.client()
        if nc is None:
            raise BusError("the bus is closed")
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)

    async def take(self) -> Msg:
        """The next message for a member (waits until one comes)."""
        if self.ready:
            return self.ready.popleft()
        waiter: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # delivered as the member stopped
                self.ready.appendleft(waiter.result())
            raise

    def reconnected(self) -> None:
        """The connection came back: requests made before may be lost (a server restart)."""
        self._pulls.clear()
        self._wake.set()

    async def left(self) -> list[Msg]:
        """A member stopped and others go on: what was asked for it must not reach this
        process (it would wait here for a member while others elsewhere are free). The
        requests made so far are dropped with their inbox (the server skips a request nobody
        listens to), the members still waiting ask again on a new one. Returns the delivered
        messages no member took (to hand back)."""
        old = self._sub
        self._pulls.clear()
        await self._subscribe()
        self._wake.set()
        return await self._drop(old)

    async def close(self) -> list[Msg]:
        """Stop pulling; returns the delivered messages no member took (to hand back)."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return await self._drop(self._sub)

    async def _drop(self, sub: Any) -> list[Msg]:
        """Unsubscribe ``sub``; returns the messages taken by no member: those in ``ready``
        and those ``sub`` received but had not passed on yet."""
        held, self.ready = list(self.ready), deque()
        if sub is not None:
            with contextlib.suppress(nats.errors.Error, ValueError):
                await sub.unsubscribe()
            queue = sub._pending_queue
            while not queue.empty():
                nmsg = queue.get_nowait()
                if nmsg.reply:  # (a status has none)
                    held.append(nmsg)
        return held

    # ---- the server's answers -------------------------------------------------------------
    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers and not msg.reply else None
        if status is None:
            self._delivered(msg)
        elif status == "409" and "Deleted" in headers.get(Header.DESCRIPTION, ""):  # type: ignore[union-attr]
            self._gone = True
            self._wake.set()
        elif status != "100":  # 408 expired, 409 another limit: the request ended
            if self._pulls.pop(msg.subject, None) is not None and self._waiting():
                self._expired = True
            self._wake.set()

    def _delivered(self, msg: Msg) -> None:
        for owed in self._pulls.values():  # oldest first, as the server serves them
            if owed[0] > 0:
                owed[0] -= 1
                break
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(msg)
                return
        self.ready.append(msg)

    def _waiting(self) -> int:
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
        return sum(1 for w in self._waiters if not w.done())

    # ---- pulling --------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                await asyncio.sleep(0)  # members freed in this turn of the loop pull together
                nc = self.client()
                if nc is None or nc.is_closed:
                    return
                if self._gone:
                    await self._recreate()
                now = loop.time()
                for reply, (_, ends) in list(self._pulls.items()):
                    if ends <= now:  # its 408 never came
                        self._pulls.pop(reply, None)
                        self._expired = self._expired or bool(self._waiting())
                waiting = self._waiting()
                batch = self._wanted(waiting)
                if batch:
                    reply, request = self._request(batch, now)
                    try:
                        await nc.publish(self.next_subject, request, reply=reply)
                    except BaseException:
                        self._pulls.pop(reply, None)
                        raise
                if self._expired and waiting:
                    self._expired = False
                    await self.check()
                self._wake.clear()
                first = min((e for _, e in self._pulls.values()), default=None)
                timeout = None if first is None else max(0.0, first - loop.time())
                # (not wait_for: on 3.11 it swallows a cancel that meets the wake-up)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            except nats.js.errors.NotFoundError:
                log.warning("consumer gone; recreating", consumer=self.consumer)
                self._gone = True
                await asyncio.sleep(_RETRY_PAUSE_S)
            except asyncio.CancelledError:
                raise
            except self.retried as exc:
                log.info("fetch failed; retrying", consumer=self.consumer, error=repr(exc))
                await asyncio.sleep(_RETRY_PAUSE_S)
            except Exception:  # a bug must not silently stop every member
                log.exception("pulling failed", consumer=self.consumer)
                await asyncio.sleep(_RETRY_PAUSE_S)

    def _wanted(self, waiting: int) -> int:
        """How many messages to ask for with ``waiting`` members waiting (0: none yet): the
        rest, once what the server owes is half of them or less."""
        owed = int(sum(owed for owed, _ in self._pulls.values()))
        return waiting - owed if waiting > owed and owed <= waiting // 2 else 0

    def _request(self, batch: int, now: float) -> tuple[str, bytes]:
        """A new pull request for ``batch`` messages, counted as owed: its reply subject and
        body (the caller sends it, and forgets it again when sending fails)."""
        self._serial += 1
        reply = f"{self._inbox}.{self._serial}"
        self._pulls[reply] = [float(batch), now + self.expiry_s + _GRACE_S]
        body = {"batch": batch, "expires": int(self.expiry_s * 1e9)}
        return reply, json.dumps(body).encode()

    async def _recreate(self) -> None:
        self._pulls.clear()  # they went with the old consumer
        await self.ensure()
        self._gone = False
