"""``memory://``: the in-process bus, plantcrew's embedded default.

Same semantics as the broker backends (see ``plantcrew.bus.base``), inside one asyncio loop:
every delivery goes through the wire format (bytes in, validated ``Message`` out), durable
subjects keep their messages until a consumer group acknowledges them, failed deliveries come
back after a backoff, and the ``max_deliver``-th failure is dead-lettered. ``quiesce`` is
exact, which makes a simulated run deterministic. Nothing survives the process.

``memory://NAME`` names a bus: every ``connect`` to the same name in one process shares it.
``?max_message_bytes=N`` sets the largest message it takes (see ``plantcrew.bus.base``); a
second ``connect`` to an open bus must not ask for another limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import structlog

from plantcrew import metrics, tracing
from plantcrew.bus.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HANDLER_CANCELLED,
    DurableOptions,
    Handler,
    QuarantineOnce,
    ack_wait_reason,
    check_name,
    check_reply,
    check_size,
    check_subject,
    dead_letter,
    failure_reason,
    is_durable,
    max_message_bytes,
    parse_or_reason,
    reply_bytes,
    settle_late,
    subject_matches,
)
from plantcrew.errors import BusError, BusTimeout
from plantcrew.messages import Message, Subjects

log = structlog.get_logger("plantcrew.bus.memory")
_DEDUPE_WINDOW = 100_000
_STREAM_LIMIT = 1_000_000
_SUBJECT_CACHE_LIMIT = 10_000
_buses: dict[str, MemoryBus] = {}


@dataclass
class _Entry:
    data: bytes
    delivered: int = 0
    generation: int = 0


@dataclass
class _Group:
    name: str
    options: DurableOptions
    queue: asyncio.Queue[_Entry] = field(default_factory=asyncio.Queue)
    members: int = 0


@dataclass
class _Stream:
    log: list[bytes] = field(default_factory=list)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    groups: dict[str, _Group] = field(default_factory=dict)


class _PlainSub:
    def __init__(self, bus: MemoryBus, pattern: str, handler: Handler, queue: str | None):
        self.bus, self.pattern, self.handler, self.queue_group = bus, pattern, handler, queue
        self.handler = tracing.instrument_handler(handler, subject=pattern, group=queue)
        self.inbox: asyncio.Queue[tuple[str, bytes, str | None]] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            subject, data, reply_to = await self.inbox.get()
            try:
                await self.bus._deliver_plain(self, subject, data, reply_to)
            finally:
                self.bus._done()

    async def unsubscribe(self) -> None:
        if self in self.bus._plain:
            self.bus._plain.remove(self)
            self.bus._routes.clear()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        while not self.inbox.empty():
            self.inbox.get_nowait()
            self.bus._done()


class _Member:
    def __init__(self, bus: MemoryBus, subject: str, group: _Group, handler: Handler):
        self.bus, self.subject, self.group, self.handler = bus, subject, group, handler
        self.handler = tracing.instrument_handler(handler, subject=subject, group=group.name)
        self.current: _Entry | None = None
        self.handling: asyncio.Task[Message | None] | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            entry = await self.group.queue.get()
            self.current = entry
            try:
                await self.bus._deliver_durable(self, entry)
            finally:
                self.current = None
                self.bus._done()

    async def unsubscribe(self) -> None:
        in_flight, handling = self.current, self.handling
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if handling is not None and not handling.done():
            handling.cancel()
        self.group.members -= 1
        if self in self.bus._members:
            self.bus._members.remove(self)
        # what was in flight is handed back: it was never acknowledged
        if in_flight is not None:
            self.bus._enqueue(self.group, in_flight)


class MemoryBus:
    """The in-process bus (see module doc). Create with ``connect("memory://")``."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.max_message_bytes = _limit_of(url)
        self._plain: list[_PlainSub] = []
        # per published subject: checked once, durable?, and the plain subscriptions matching it
        # (dropped whenever a subscription comes or goes)
        self._durable: dict[str, bool] = {}
        self._routes: dict[str, list[_PlainSub]] = {}
        self._members: list[_Member] = []
        self._streams: dict[str, _Stream] = {}
        self._rr: dict[str, itertools.count[int]] = {}
        self._outstanding = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._background: set[asyncio.Future[Message | None]] = set()
        self._inbox_ids = itertools.count()
        self._inboxes: dict[str, asyncio.Future[bytes]] = {}  # request inbox -> its reply
        self._closed = False
        self._quarantined = QuarantineOnce()

    # ---- bookkeeping of outstanding work, for quiesce -------------------------------------
    def _busy(self) -> None:
        self._outstanding += 1
        self._settled.clear()

    def _done(self) -> None:
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._outstanding = 0
            self._settled.set()

    def _late_done(self, task: asyncio.Future[Message | None]) -> None:
        """A handler that outlived its ack wait has finished (its result is void)."""
        self._background.discard(task)
        self._done()

    async def quiesce(self, timeout: float = 10.0) -> bool:
        """Wait until no delivery, redelivery timer or late handler is outstanding."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # let freshly scheduled tasks run before judging
            for _ in range(3):
                await asyncio.sleep(0)
            if self._outstanding == 0:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), remaining)

    # ---- lifecycle -----------------------------------------------------------------------
    async def connect(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._plain):
            await sub.unsubscribe()
        for member in list(self._members):
            await member.unsubscribe()
        for task in list(self._background):
            task.cancel()
        name = urlparse(self.url).netloc
        if _buses.get(name) is self:
            del _buses[name]

    # ---- publish -------------------------------------------------------------------------
    async def publish(self, msg: Message, subject: str | None = None) -> None:
        subject = msg.subject if subject is None else subject
        durable = self._durable.get(subject)
        if durable is None:
            durable = self._check(subject)
        msg = tracing.stamp(msg, subject)
        data = msg.wire_bytes()
        check_size(subject, len(data), self.max_message_bytes)
        self._publish_bytes(subject, data, msg_id=str(msg.id) if durable else None)

    async def publish_raw(self, subject: str, data: bytes) -> None:
        """Send bytes as they are (a gateway relaying a foreign producer); receivers validate."""
        check_size(check_subject(subject), len(data), self.max_message_bytes)
        self._publish_bytes(subject, data, msg_id=None)

    def _check(self, subject: str) -> bool:
        """Check ``subject`` (BusError when bad) and remember whether it is durable."""
        check_subject(subject)
        if len(self._durable) >= _SUBJECT_CACHE_LIMIT:
            self._durable.clear()
        durable = self._durable[subject] = is_durable(subject)
        return durable

    def _matching(self, subject: str) -> list[_PlainSub]:
        subs = self._routes.get(subject)
        if subs is None:
            if len(self._routes) >= _SUBJECT_CACHE_LIMIT:
                self._routes.clear()
            subs = [s for s in self._plain if subject_matches(s.pattern, subject)]
            self._routes[subject] = subs
        return subs

    def _publish_bytes(
        self, subject: str, data: bytes, *, msg_id: str | None, reply_to: str | None = None
    ) -> None:
        if self._closed:
            raise BusError("bus is closed")
        if is_durable(subject):
            self._store(subject, data, msg_id)
            return
        subs = self._matching(subject)
        seen_groups: set[str] = set()
        for sub in subs:
            if sub.queue_group is None:
                self._busy()
                sub.inbox.put_nowait((subject, data, reply_to))
            elif sub.queue_group not in seen_groups:
                seen_groups.add(sub.queue_group)
                members = [s for s in subs if s.queue_group == sub.queue_group]
                counter = self._rr.setdefault(sub.queue_group, itertools.count())
                chosen = members[next(counter) % len(members)]
                self._busy()
                chosen.inbox.put_nowait((subject, data, reply_to))

    def _store(self, subject: str, data: bytes, msg_id: str | None) -> None:
        stream = self._streams.setdefault(subject, _Stream())
        if msg_id is not None:
            if msg_id in stream.seen:
                return  # duplicate publish of the same message id
            stream.seen[msg_id] = None
            if len(stream.seen) > _DEDUPE_WINDOW:
                stream.seen.popitem(last=False)
        stream.log.append(data)
        if len(stream.log) > _STREAM_LIMIT:
            del stream.log[: len(stream.log) - _STREAM_LIMIT]
        for group in stream.groups.values():
            self._enqueue(group, _Entry(data))

    def _enqueue(self, group: _Group, entry: _Entry) -> None:
        self._busy()
        group.queue.put_nowait(entry)

    # ---- subscribe -----------------------------------------------------------------------
    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> _PlainSub:
        check_subject(subject, pattern=True)
        if is_durable(subject):
            raise BusError(f"{subject!r} is a durable subject: use consume()")
        if queue is not None:
            check_name(queue, "queue group")
        sub = _PlainSub(self, subject, handler, queue)
        self._plain.append(sub)
        self._routes.clear()
        return sub

    async def consume(
        self,
        subject: str,
        handler: Handler,
        *,
        group: str,
        options: DurableOptions | None = None,
    ) -> _Member:
        check_subject(subject)
        if not is_durable(subject):
            raise BusError(f"{subject!r} is not a durable subject: use subscribe()")
        check_name(group, "group name")
        stream = self._streams.setdefault(subject, _Stream())
        grp = stream.groups.get(group)
        if grp is None:
            grp = stream.groups[group] = _Group(group, options or DurableOptions())
            for data in stream.log:  # deliver-all for a new group
                self._enqueue(grp, _Entry(data))
        grp.members += 1
        member = _Member(self, subject, grp, handler)
        self._members.append(member)
        return member

    async def request(self, msg: Message, *, timeout: float = 5.0) -> Message:
        if is_durable(check_subject(msg.subject)):
            raise BusError("request/reply runs on plain subjects only")
        inbox = f"_inbox.{id(self)}.{next(self._inbox_ids)}"
        data = msg.wire_bytes()
        check_size(msg.subject, len(data), self.max_message_bytes)
        fut = self._inboxes[inbox] = asyncio.get_running_loop().create_future()
        try:
            self._publish_bytes(msg.subject, data, msg_id=str(msg.id), reply_to=inbox)
            answer = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise BusTimeout(f"no reply on {msg.subject!r} within {timeout}s") from None
        finally:
            del self._inboxes[inbox]
        check_reply(msg.subject, answer)  # the responder's refusal of a reply over its limit
        return Message.from_bytes(answer)  # a handler's reply: through the wire format

    # ---- delivery ------------------------------------------------------------------------
    async def _deliver_plain(
        self, sub: _PlainSub, subject: str, data: bytes, reply_to: str | None
    ) -> None:
        msg, reason = parse_or_reason(data)
        if msg is None:
            # once per publish, however many subscriptions it reached (a queue group: once)
            group = sub.queue_group
            receiver = sub if group is None else ("queue", group)
            if self._quarantined.first(subject, data, receiver, every=group is None):
                self._quarantine(subject, data, reason or "invalid")
            return
        try:
            reply = await sub.handler(msg)
        except Exception as exc:  # a plain subscriber's failure loses only its own copy
            log.warning("handler failed", subject=msg.subject, type=msg.type, error=repr(exc))
            return
        if reply is not None and reply_to is not None:
            fut = self._inboxes.get(reply_to)
            if fut is not None and not fut.done():  # else the requester gave up waiting
                fut.set_result(reply_bytes(reply, subject=subject, limit=self.max_message_bytes))

    async def _deliver_durable(self, member: _Member, entry: _Entry) -> None:
        group, options = member.group, member.group.options
        msg, reason = parse_or_reason(entry.data)
        if msg is None:
            self._quarantine(member.subject, entry.data, reason or "invalid")
            return
        entry.delivered += 1
        entry.generation += 1
        generation = entry.generation
        task = member.handling = asyncio.ensure_future(member.handler(msg))
        done, _ = await asyncio.wait({task}, timeout=options.ack_wait_s)
        if not done:
            # ack wait expired: redeliver; the late handler keeps running, its ack is void
            self._busy()
            self._background.add(task)
            task.add_done_callback(self._late_done)
            task.add_done_callback(
                functools.partial(settle_late, subject=member.subject, msg_id=str(msg.id))
            )
            reason = ack_wait_reason(options.ack_wait_s)
            self._retry(member.subject, group, entry, msg, reason, generation)
            return
        if task.cancelled():
            # cancelled from inside (a stopping member is cancelled in the wait above, and
            # hands the entry back): unacknowledged, so it comes again, as on the brokers
            self._retry(member.subject, group, entry, msg, HANDLER_CANCELLED, generation)
            return
        exc = task.exception()
        if exc is None:
            return  # acknowledged
        self._retry(member.subject, group, entry, msg, failure_reason(exc), generation)

    def _retry(
        self,
        subject: str,
        group: _Group,
        entry: _Entry,
        msg: Message,
        reason: str,
        generation: int,
    ) -> None:
        options = group.options
        if entry.delivered >= options.max_deliver:
            log.warning("dead-lettered", subject=subject, id=str(msg.id), reason=reason)
            metrics.dead_lettered(subject, quarantined=False)
            if subject != Subjects.DLQ:
                self._publish_bytes(
                    Subjects.DLQ,
                    dead_letter(
                        subject=subject,
                        reason=reason,
                        raw=entry.data,
                        attempts=entry.delivered,
                        quarantined=False,
                        original=msg,
                    ).wire_bytes(),
                    msg_id=None,
                )
            return
        delay = options.backoff(entry.delivered)
        metrics.redelivered(subject)
        self._busy()

        def redeliver() -> None:
            if entry.generation == generation and not self._closed:
                self._enqueue(group, entry)
            self._done()

        asyncio.get_running_loop().call_later(delay, redeliver)

    def _quarantine(self, subject: str, data: bytes, reason: str) -> None:
        log.warning("quarantined", subject=subject, reason=reason)
        metrics.dead_lettered(subject, quarantined=True)
        if subject == Subjects.DLQ:
            return
        dl = dead_letter(subject=subject, reason=reason, raw=data, attempts=1, quarantined=True)
        self._publish_bytes(Subjects.DLQ, dl.wire_bytes(), msg_id=str(dl.id))


def _limit_of(url: str) -> int:
    """The ``max_message_bytes`` a ``memory://`` URL asks for (BusError for another query)."""
    query = {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}
    unknown = set(query) - {"max_message_bytes"}
    if unknown:
        raise BusError(f"unknown query parameter(s) {sorted(unknown)} in {url!r}")
    limit = max_message_bytes(query, repr(url))
    return DEFAULT_MAX_MESSAGE_BYTES if limit is None else limit


def get_memory_bus(url: str) -> MemoryBus:
    """The shared in-process bus for ``url`` (``memory://`` or ``memory://NAME``, optionally
    ``?max_message_bytes=N``). Raises BusError for another query parameter, or when the bus
    of that name is open with another ``max_message_bytes``."""
    name = urlparse(url).netloc
    bus = _buses.get(name)
    if bus is None or bus._closed:
        bus = _buses[name] = MemoryBus(url)
    elif bus.max_message_bytes != _limit_of(url):
        raise BusError(
            f"memory bus {name!r} is open with max_message_bytes={bus.max_message_bytes}; "
            f"{url!r} asks for {_limit_of(url)}"
        )
    return bus
