"""``redis://``: the bus on Redis pub/sub (plain subjects) and Redis Streams (durable subjects).

URL: ``redis://[:pass@]host:6379[/db][?namespace=NS&sync=always&dedupe_window=120&maxlen=N&
max_message_bytes=N]``
(``rediss://`` for TLS). The query is plantcrew's, never sent to the server:

- ``namespace``: prefixes every channel and key (``NS.crew.events``), so several plants or test
  runs share one server without seeing each other.
- ``sync=always``: production durability. The bus refuses (BusError) a server that does not
  run with ``appendonly yes`` and ``appendfsync always`` (``CONFIG GET``; see
  ``infra/redis.conf``), since otherwise an acknowledged command can be lost on a power cut.
- ``dedupe_window``: seconds during which a repeated message id is dropped (default 120).
- ``maxlen``: approximate length each durable stream is trimmed to (default 1,000,000); an
  entry a consumer group has not acknowledged (pending, or not yet delivered) is never trimmed.
- ``max_message_bytes``: the largest message taken (default ``DEFAULT_MAX_MESSAGE_BYTES``, as
  on every backend: see ``plantcrew.bus.base``; Redis itself would take 512 MB).

Plain subjects (``telemetry.*``, ``crew.control``, ``crew.approvals``):

- ``subscribe`` without a queue group: ``SUBSCRIBE`` for a subject, ``PSUBSCRIBE`` for a
  pattern. NATS ``*`` and ``>`` both become the glob ``*``, which also matches across dots,
  so every delivery is filtered again with ``subject_matches``.
- queue groups: pub/sub has no one-member delivery, so a member registers its group in the
  hash ``<NS>._queues`` (renewed every 10 s, expires after 30 s) and pops from the group's list
  with ``BLPOP``; a publisher pushes a copy onto the list of every registered group whose pattern
  matches (cached, refreshed when a group is announced on the ``<NS>._queues`` channel and every
  few seconds). Redis hands each element to one ``BLPOP`` caller, longest waiting first.
- ``request`` subscribes to a private inbox channel and sends the request with the inbox in a
  frame (``\\0<reply>\\0<message>``); the responder's reply (or its refusal, see
  ``plantcrew.bus.base``) is published to the inbox.

A half-open connection (open, but reaching nothing after a partition) is noticed: a command
whose reply does not come within ``_SOCKET_TIMEOUT_S`` fails (redis-py drops its connection;
it is retried on a new one), and the pub/sub reader pings a connection silent for
``_PUBSUB_PING_S`` and drops it when no pong comes ``_PUBSUB_PONG_WAIT_S`` later; the next read
reconnects and resubscribes.

Durable subjects (``crew.events``, ``crew.tasks.*``, ``crew.dlq``): one stream per subject
(Redis >= 6.2 for ``XAUTOCLAIM``; 7 recommended).
``publish`` runs a Lua script that sets a dedupe key (``SET NX PX``, the dedupe window) and
``XADD``s only when the key was new, so a repeat of a message id (including a retry after a
lost reply) is dropped; it then trims (``MINID ~``) to about ``maxlen``, never past the oldest
entry a group has not acknowledged. ``consume`` creates the group at ``0`` (deliver-all,
``MKSTREAM``); each member is a consumer that reads one entry at a time with ``XREADGROUP``,
``XACK``s after the handler returns, and on failure "naks" by resetting the entry's idle time
(``XCLAIM ... IDLE ... JUSTID``, in a script that does it only while the member still holds
the entry: a late nak leaves an entry another member took over with that member) so that it
becomes claimable after the backoff delay. Entries
idle for longer than ``ack_wait_s`` plus a grace second (failed, overrun, or held by a member
that died) are taken over with ``XAUTOCLAIM``; the delivery count comes from ``XPENDING``.
After ``max_deliver`` deliveries a ``DeadLetter`` goes to the ``crew.dlq`` stream before the
original is acknowledged. ``unsubscribe`` hands the member's pending entries to the
``_handback`` consumer as immediately claimable and deletes the member's consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import structlog
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from plantcrew import metrics, tracing
from plantcrew.bus.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HANDLER_CANCELLED,
    NAME,
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
from plantcrew.settings import redacted_url as redacted

log = structlog.get_logger("plantcrew.bus.redis")

_VALIDATE_JSON = Message.__pydantic_validator__.validate_json
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_SUBJECT_CACHE_LIMIT = 10_000
_INBOX_LIMIT = 100_000  # queued plain deliveries per subscription before the oldest is dropped
_QUEUE_LIST_LIMIT = 100_000
_QUEUE_TTL_S = 30.0
_QUEUE_RENEW_S = 10.0
_QUEUE_REFRESH_S = 5.0
_POLL_S = 1.0
_RETRY_PAUSE_S = 0.25
_SOCKET_TIMEOUT_S = 5.0  # a command's reply (a blocking read asks for at most _POLL_S)
_PUBSUB_PING_S = 5.0  # a pub/sub connection silent this long is pinged
_PUBSUB_PONG_WAIT_S = 5.0  # and dropped when its pong does not come this much later
_ACK_WAIT_GRACE_S = 1.0
_HANDBACK = "_handback"
_HANDBACK_IDLE_MS = 10 * 24 * 3600 * 1000
_HANDBACK_BATCH = 1000  # pending entries handed back per XCLAIM
_FIELD = b"d"


def _trim_slack(maxlen: int) -> int:
    """Entries a durable stream may grow past ``maxlen`` before the store script trims it:
    1 % of ``maxlen``, at most 1,000 (0 for a stream of at most 100 entries)."""
    return min(1000, maxlen // 100)


# KEYS[1] stream, KEYS[2] dedupe key; ARGV[1] data, ARGV[2] dedupe ms, ARGV[3] maxlen,
# ARGV[4] slack. Trims to about maxlen entries, but never below the oldest entry a group has
# not acknowledged (its oldest pending one, or the first it has not been delivered): MAXLEN
# alone would drop a lagging group's backlog. It trims only once the stream is more than slack
# entries over maxlen, so a publish costs one XLEN, and the trim (XINFO GROUPS, one XPENDING
# summary per group, an XRANGE over at most the entries to drop) comes once per slack publishes.
_STORE_LUA = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[1])
local function older(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  if tonumber(am) ~= tonumber(bm) then
    return tonumber(am) < tonumber(bm)
  end
  return tonumber(as) < tonumber(bs)
end
local function trim()
  local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3])
  if excess <= tonumber(ARGV[4]) then
    return
  end
  local floor = id
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local group = {}
    for i = 1, #info, 2 do
      group[info[i]] = info[i + 1]
    end
    local needed = group['last-delivered-id']
    if group['pending'] > 0 then
      needed = redis.call('XPENDING', KEYS[1], group['name'])[2]
    end
    if older(needed, floor) then
      floor = needed
    end
  end
  if floor == '0-0' then
    return  -- a group has read nothing yet
  end
  local below = redis.call('XRANGE', KEYS[1], '-', '(' .. floor, 'COUNT', excess + 1)
  if #below > excess then
    floor = below[excess + 1][1]
  end
  redis.call('XTRIM', KEYS[1], 'MINID', '~', floor)
end
pcall(trim)  -- the entry is stored: a failed trim must not fail the publish
return id
"""


# KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4] idle ms.
# Sets the entry's idle time only while the consumer still holds it: a nak that comes late,
# after another member took the entry over (XAUTOCLAIM), must not take it back from that
# member and make it claimable by a third. Returns 1 when it did, else 0.
_NAK_LUA = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #held == 0 then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""


@dataclass(frozen=True)
class RedisSettings:
    """What a ``redis://`` URL asks for (see the module doc); ``server`` has no query."""

    server: str
    namespace: str = ""
    sync_always: bool = False
    dedupe_window_s: float = 120.0
    maxlen: int = 1_000_000
    connect_timeout_s: float = 5.0
    publish_timeout_s: float = 10.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        """Parse ``url``; raises BusError for an unknown or malformed query value."""
        parts = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {
            "namespace",
            "sync",
            "dedupe_window",
            "maxlen",
            "connect_timeout",
            "publish_timeout",
            "max_message_bytes",
        }
        unknown = set(query) - known
        if unknown:
            raise BusError(f"unknown query parameter(s) {sorted(unknown)} in {redacted(url)!r}")
        limit = max_message_bytes(query, repr(redacted(url)))
        namespace = query.get("namespace", "")
        if namespace and not NAME.fullmatch(namespace):
            raise BusError(f"bad namespace {namespace!r} in {redacted(url)!r}: use [A-Za-z0-9_-]")
        sync = query.get("sync", "")
        if sync not in ("", "always", "everysec"):
            raise BusError(f"sync must be 'always' or 'everysec', got {sync!r}")
        try:
            return cls(
                server=urlunparse(parts._replace(query="", fragment="")),
                namespace=namespace,
                sync_always=sync == "always",
                dedupe_window_s=float(query.get("dedupe_window", "120")),
                maxlen=int(query.get("maxlen", "1000000")),
                connect_timeout_s=float(query.get("connect_timeout", "5")),
                publish_timeout_s=float(query.get("publish_timeout", "10")),
                max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES if limit is None else limit,
            )
        except ValueError as exc:
            raise BusError(f"bad number in {redacted(url)!r}: {exc}") from None

    @property
    def prefix(self) -> str:
        """Channel and key prefix: ``"NS."`` or ``""``."""
        return f"{self.namespace}." if self.namespace else ""


def to_glob(pattern: str) -> str:
    """A Redis ``PSUBSCRIBE`` glob covering the NATS-style ``pattern`` (``*``/``>`` → ``*``).

    The glob is wider than the pattern (``*`` crosses dots), so matches are filtered again with
    ``subject_matches``; tokens hold no glob metacharacters (``check_subject``).
    """
    return ".".join("*" if tok in ("*", ">") else tok for tok in pattern.split("."))


def frame(data: bytes, reply: str = "", subject: str | None = None) -> bytes:
    """Wrap ``data`` with a reply inbox (and, for queue lists, the subject).

    A JSON message never starts with NUL, so unframed bytes go as they are; bytes that do start
    with NUL are framed with an empty reply so they cannot be mistaken for a frame.
    """
    if subject is not None:
        return b"\0" + subject.encode() + b"\0" + reply.encode() + b"\0" + data
    if reply or data[:1] == b"\0":
        return b"\0" + reply.encode() + b"\0" + data
    return data


def unframe(raw: bytes) -> tuple[str, bytes]:
    """``(reply, data)`` of a pub/sub payload (``reply`` is ``""`` when there is none)."""
    if raw[:1] != b"\0":
        return "", raw
    reply, _, data = raw[1:].partition(b"\0")
    return reply.decode(), data


def unframe_queued(raw: bytes) -> tuple[str, str, bytes]:
    """``(subject, reply, data)`` of a queue-list element."""
    subject, _, rest = raw[1:].partition(b"\0")
    reply, _, data = rest.partition(b"\0")
    return subject.decode(), reply.decode(), data


class _PlainSub:
    """A plain subscription: its own inbox and task, fed by the bus's pub/sub reader or, with a
    queue group, by its own ``BLPOP`` loop."""

    def __init__(self, bus: RedisBus, pattern: str, handler: Handler, queue: str | None) -> None:
        self.bus, self.pattern, self.handler, self.queue = bus, pattern, handler, queue
        self.handler = tracing.instrument_handler(handler, subject=pattern, group=queue)
        self.wire = bus.settings.prefix + pattern
        self.glob = to_glob(self.wire) if ("*" in pattern or ">" in pattern) else None
        self.list_key = bus._queue_key(queue, pattern) if queue else None
        # who receives a copy of a publish (see QuarantineOnce): this, or its queue group
        self.receiver: object = self if queue is None else (queue, pattern)
        self.inbox: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self.active = False
        self.dropped = 0
        self.tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._run())]
        if self.list_key is not None:
            self.tasks.append(asyncio.create_task(self._pop_loop(self.list_key)))

    def offer(self, subject: str, reply: str, data: bytes) -> None:
        if self.inbox.qsize() >= _INBOX_LIMIT:
            self.inbox.get_nowait()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("slow subscriber: dropping oldest", pattern=self.pattern)
        self.inbox.put_nowait((subject, reply, data))

    async def _run(self) -> None:
        while True:
            subject, reply, data = await self.inbox.get()
            self.active = True
            try:
                await self.bus._deliver_plain(self, subject, reply, data)
            except BusError as exc:  # quarantine could not be stored: plain is at most once
                log.error("delivery failed", subject=subject, error=repr(exc))
            except Exception:
                log.exception("delivery failed", subject=subject)
            finally:
                self.active = False

    async def _pop_loop(self, key: str) -> None:
        r = self.bus._r_or_raise()
        while True:
            try:
                popped = await r.blpop([key], timeout=_POLL_S)
            except _TRANSIENT as exc:
                log.info("queue pop failed; retrying", queue=self.queue, error=repr(exc))
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            if popped is not None:
                element: Any = popped[1]
                subject, reply, data = unframe_queued(element)
                self.offer(subject, reply, data)

    def busy(self) -> bool:
        return self.active or not self.inbox.empty()

    async def unsubscribe(self) -> None:
        """Stop receiving; queued plain messages are dropped (plain: at most once)."""
        await self.bus._remove_plain(self)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _Member:
    """One member (a Redis Streams consumer) of a durable consumer group."""

    _ids = itertools.count()

    def __init__(
        self, bus: RedisBus, subject: str, group: str, handler: Handler, options: DurableOptions
    ) -> None:
        self.bus, self.subject, self.group, self.handler = bus, subject, group, handler
        self.handler = tracing.instrument_handler(handler, subject=subject, group=group)
        self.options = options
        self.key = bus.settings.prefix + subject
        self.name = f"{socket.gethostname()}-{os.getpid()}-{next(self._ids)}-{uuid.uuid4().hex[:6]}"
        self.claim_idle_ms = int((options.ack_wait_s + _ACK_WAIT_GRACE_S) * 1000)
        self.next_claim = 0.0
        self.claim_cursor = "0-0"
        self.current: bytes | None = None
        self.handling: asyncio.Future[Message | None] | None = None
        self.stopping = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"redis-member-{self.name}")

    async def _run(self) -> None:
        while not self.stopping:
            try:
                entry = await self._next()
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream or group is gone (server lost its data)
                    log.warning("group gone; recreating", key=self.key, group=self.group)
                    with contextlib.suppress(RedisError):
                        await self.bus._ensure_group(self.key, self.group)
                else:
                    log.warning("read failed", key=self.key, error=repr(exc))
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            except _TRANSIENT as exc:
                log.info("read failed; retrying", key=self.key, error=repr(exc))
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            except Exception:
                log.exception("read failed", key=self.key)
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            if entry is None:
                continue
            entry_id, data, delivered = entry
            self.current = entry_id
            try:
                await self.bus._deliver_durable(self, entry_id, data, delivered)
            except (*_TRANSIENT, ResponseError, BusError) as exc:
                # the entry stays pending; it is claimed again once idle past the ack wait
                log.info("settling failed", key=self.key, error=repr(exc))
            except Exception:  # a bug must not silently stop the member
                log.exception("delivery failed", key=self.key)
            finally:
                self.current = None

    async def _next(self) -> tuple[bytes, bytes, int] | None:
        """The next entry for this member: an idle one to take over first, then a new one."""
        r = self.bus._r_or_raise()
        loop = asyncio.get_running_loop()
        if loop.time() >= self.next_claim:
            cursor, claimed, *_ = await r.xautoclaim(
                self.key, self.group, self.name, self.claim_idle_ms, self.claim_cursor, count=1
            )
            self.claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            if self.claim_cursor == "0-0":
                self.next_claim = loop.time() + _POLL_S
            for entry_id, fields in claimed:
                if not fields or _FIELD not in fields:  # trimmed away while pending
                    await r.xack(self.key, self.group, entry_id)
                    return None
                pending = await r.xpending_range(
                    self.key, self.group, min=entry_id, max=entry_id, count=1
                )
                delivered = int(pending[0]["times_delivered"]) if pending else 1
                return entry_id, fields[_FIELD], delivered
        block_ms = int(min(_POLL_S, max(0.001, self.next_claim - loop.time())) * 1000)
        res: Any = await r.xreadgroup(
            self.group, self.name, {self.key: ">"}, count=1, block=max(1, block_ms)
        )
        for _key, entries in res or ():
            for entry_id, fields in entries:
                return entry_id, fields.get(_FIELD, b""), 1
        return None

    async def nak(self, entry_id: bytes, delay_s: float) -> None:
        """Make ``entry_id`` claimable by any member after ``delay_s`` seconds, if this member
        still holds it (else nothing: another member took it over and is handling it)."""
        idle = max(0, self.claim_idle_ms - int(delay_s * 1000))
        keys = [self.key]
        await self.bus._nak_script(keys=keys, args=[self.group, self.name, entry_id, idle])
        loop = asyncio.get_running_loop()
        self.next_claim = min(self.next_claim, loop.time() + delay_s + 0.005)

    async def unsubscribe(self) -> None:
        """Stop; hand this member's pending entries back to the group, claimable at once."""
        self.stopping = True
        handling = self.handling
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if handling is not None and not handling.done():
            handling.cancel()
        if self in self.bus._members:
            self.bus._members.remove(self)
        r = self.bus._r
        if r is None:
            return
        try:
            last: list[Any] = []
            while True:  # in batches: deleting the consumer drops whatever it still holds
                held = await r.xpending_range(
                    self.key, self.group, "-", "+", _HANDBACK_BATCH, consumername=self.name
                )
                ids: list[Any] = [p["message_id"] for p in held]
                if not ids or ids == last:  # (a batch that did not move: never loop on it)
                    break
                last = ids
                await r.xclaim(
                    self.key, self.group, _HANDBACK, 0, ids, idle=_HANDBACK_IDLE_MS, justid=True
                )
            await r.xgroup_delconsumer(self.key, self.group, self.name)
        except (*_TRANSIENT, ResponseError) as exc:
            # not lost: the entries become claimable once idle past the ack wait
            log.info("hand-back failed", key=self.key, error=repr(exc))


class RedisBus:
    """The bus on Redis pub/sub + Streams (see module doc). Create with ``connect("redis://...")``.

    Raises BusError (naming the URL, password hidden) when the server cannot be reached, when
    a durable publish is not stored within ``publish_timeout``, or for a bad subject;
    MessageTooLarge for a message over ``max_message_bytes`` (as every backend).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings = RedisSettings.from_url(url)
        self.max_message_bytes = self.settings.max_message_bytes
        self._r: Redis | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._registrar: asyncio.Task[None] | None = None
        self._store_script: Any = None
        self._nak_script: Any = None
        self._plain: list[_PlainSub] = []
        self._by_channel: dict[str, list[_PlainSub]] = {}
        self._by_glob: dict[str, list[_PlainSub]] = {}
        self._inboxes: dict[str, asyncio.Future[bytes]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._members: list[_Member] = []
        self._groups: set[tuple[str, str]] = set()
        self._late: set[asyncio.Future[Message | None]] = set()
        self._subjects: dict[str, tuple[str, bool]] = {}
        self._queues: dict[str, float] = {}  # "group pattern" -> expiry (epoch s), all buses
        self._routes: dict[str, list[str]] = {}  # subject -> queue list keys, from _queues
        self._quarantined = QuarantineOnce()

    # ---- lifecycle -----------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect (commands retry through short outages) and start the pub/sub reader."""
        s = self.settings
        r = Redis.from_url(
            s.server,
            protocol=2,
            socket_connect_timeout=s.connect_timeout_s,
            socket_timeout=_SOCKET_TIMEOUT_S,  # a half-open socket fails a command, not hangs
            socket_keepalive=True,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        try:
            await asyncio.wait_for(r.ping(), timeout=s.connect_timeout_s + 1)
            if s.sync_always:
                await self._check_fsync(r)
        except (TimeoutError, RedisError, OSError) as exc:
            await r.aclose()
            raise BusError(
                f"cannot reach Redis at {redacted(self.url)}: {exc!r}; "
                "start it with: docker compose -f infra/compose.yaml up -d redis"
            ) from None
        except BusError:
            await r.aclose()
            raise
        self._r = r
        self._store_script = r.register_script(_STORE_LUA)
        self._nak_script = r.register_script(_NAK_LUA)
        self._pubsub = r.pubsub()
        await self._subscribe_channel(self._control_channel)
        self._reader = asyncio.create_task(self._read_pubsub(), name="redis-pubsub-reader")
        await self._wait_confirmed(self._control_channel)
        await self._refresh_queues()
        self._registrar = asyncio.create_task(self._keep_queues(), name="redis-queue-registry")

    async def _check_fsync(self, r: Redis) -> None:
        try:
            aof: dict[Any, Any] = await r.config_get("appendonly")
            fsync: dict[Any, Any] = await r.config_get("appendfsync")
        except ResponseError as exc:
            raise BusError(
                f"sync=always asked of {redacted(self.url)} but CONFIG GET is refused ({exc}); "
                "cannot verify appendfsync"
            ) from None
        got = (_text(aof.get(b"appendonly")), _text(fsync.get(b"appendfsync")))
        if got != ("yes", "always"):
            raise BusError(
                f"sync=always asked of {redacted(self.url)} but it runs with appendonly={got[0]} "
                f"appendfsync={got[1]}; use appendonly yes and appendfsync always "
                "(infra/redis.conf)"
            )

    async def close(self) -> None:
        """Hand back in-flight durable work, stop every subscription and disconnect."""
        for member in list(self._members):
            await member.unsubscribe()
        for sub in list(self._plain):
            await sub.unsubscribe()
        for task in list(self._late):
            task.cancel()
        for bg in (self._reader, self._registrar):
            if bg is not None:
                bg.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bg
        pubsub, r, self._pubsub, self._r = self._pubsub, self._r, None, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        if r is not None:
            await r.aclose()

    def _r_or_raise(self) -> Redis:
        if self._r is None:
            raise BusError(f"bus {redacted(self.url)} is closed (or never connected)")
        return self._r

    # ---- names ---------------------------------------------------------------------------
    @property
    def _control_channel(self) -> str:
        return self.settings.prefix + "_queues"

    def _queue_key(self, group: str, pattern: str) -> str:
        return f"{self.settings.prefix}_queue:{group}:{pattern}"

    def _dedupe_key(self, wire: str, msg_id: str) -> str:
        return f"{self.settings.prefix}_dedupe:{wire}:{msg_id}"

    def _resolve(self, subject: str) -> tuple[str, bool]:
        """``(channel or stream key, durable?)``, validated once and cached."""
        hit = self._subjects.get(subject)
        if hit is None:
            check_subject(subject)
            if len(self._subjects) >= _SUBJECT_CACHE_LIMIT:
                self._subjects.clear()
            hit = self._subjects[subject] = (self.settings.prefix + subject, is_durable(subject))
        return hit

    def _local(self, wire: str) -> str:
        prefix = self.settings.prefix
        return wire[len(prefix) :] if wire.startswith(prefix) else wire

    # ---- publish -------------------------------------------------------------------------
    async def publish(self, msg: Message, subject: str | None = None) -> None:
        """Send ``msg``; on a durable subject, wait until Redis stored it (or it was a repeat
        of a stored id). Raises BusError when not stored within ``publish_timeout``."""
        subject = msg.subject if subject is None else subject
        msg = tracing.stamp(msg, subject)
        wire, durable = self._resolve(subject)
        data = msg.wire_bytes()
        check_size(subject, len(data), self.max_message_bytes)
        if durable:
            await self._store(wire, data, str(msg.id))
        else:
            await self._send_plain(subject, wire, data)

    async def publish_raw(self, subject: str, data: bytes) -> None:
        """Send bytes as they are; receivers validate them and quarantine what does not parse."""
        wire, durable = self._resolve(subject)
        check_size(subject, len(data), self.max_message_bytes)
        if durable:
            # a fresh dedupe key: a retry after a lost reply stores the bytes once
            await self._store(wire, data, f"raw-{uuid.uuid4().hex}")
        else:
            await self._send_plain(subject, wire, data)

    async def _send_plain(self, subject: str, wire: str, data: bytes, reply: str = "") -> int:
        """Publish on a plain subject; returns how many subscribers and queue groups it
        reached (0: nobody listens)."""
        r = self._r_or_raise()
        routes = self._routes.get(subject)
        if routes is None:
            routes = self._route(subject)
        try:
            if not routes:
                return int(await r.publish(wire, frame(data, reply)))
            queued = frame(data, reply, subject)
            pipe = r.pipeline(transaction=False)
            pipe.publish(wire, frame(data, reply))
            for key in routes:
                pipe.rpush(key, queued)
                pipe.ltrim(key, -_QUEUE_LIST_LIMIT, -1)
                pipe.pexpire(key, int(_QUEUE_TTL_S * 1000))
            return int((await pipe.execute())[0]) + len(routes)
        except _TRANSIENT as exc:
            raise BusError(f"publish to {wire!r} on {redacted(self.url)} failed: {exc!r}") from None

    async def _store(self, wire: str, data: bytes, dedupe_id: str) -> None:
        s, loop = self.settings, asyncio.get_running_loop()
        deadline = loop.time() + s.publish_timeout_s
        keys = [wire, self._dedupe_key(wire, dedupe_id)]
        args = [data, int(s.dedupe_window_s * 1000), s.maxlen, _trim_slack(s.maxlen)]
        while True:
            try:
                # None: a repeat of an id stored within the dedupe window (or our own retry)
                await self._store_script(keys=keys, args=args)
                return
            except _TRANSIENT as exc:
                if loop.time() >= deadline or self._r is None:
                    state = (
                        "the bus was closed"
                        if self._r is None
                        else "no reply"
                        if isinstance(exc, RedisTimeoutError)
                        else "the connection is down"
                    )
                    raise BusError(
                        f"publish to {wire!r} not stored by {redacted(self.url)} within "
                        f"{s.publish_timeout_s}s: {state}; last error {exc!r}"
                    ) from None
                await asyncio.sleep(_RETRY_PAUSE_S)
            except ResponseError as exc:
                raise BusError(f"publish to {wire!r} refused by Redis: {exc}") from None

    # ---- queue-group registry ------------------------------------------------------------
    def _route(self, subject: str) -> list[str]:
        now = time.time()
        keys = []
        for field, expiry in self._queues.items():
            group, _, pattern = field.partition(" ")
            if expiry > now and subject_matches(pattern, subject):
                keys.append(self._queue_key(group, pattern))
        if len(self._routes) >= _SUBJECT_CACHE_LIMIT:
            self._routes.clear()
        self._routes[subject] = keys
        return keys

    async def _refresh_queues(self) -> None:
        r = self._r_or_raise()
        raw = await r.hgetall(self.settings.prefix + "_queues")
        now = time.time()
        queues, stale = {}, []
        for field, expiry in raw.items():
            name = _text(field)
            if float(expiry) > now:
                queues[name] = float(expiry)
            else:
                stale.append(field)
        for sub in self._plain:  # our own groups count even before the server says so
            if sub.queue is not None:
                queues[f"{sub.queue} {sub.pattern}"] = now + _QUEUE_TTL_S
        if stale:
            await r.hdel(self.settings.prefix + "_queues", *stale)
        self._queues = queues
        self._routes = {}

    async def _announce_queues(self, announce: bool) -> None:
        r = self._r_or_raise()
        mine = {f"{s.queue} {s.pattern}" for s in self._plain if s.queue is not None}
        if mine:
            expiry = time.time() + _QUEUE_TTL_S
            await r.hset(self.settings.prefix + "_queues", mapping=dict.fromkeys(mine, expiry))
        if announce:
            await r.publish(self._control_channel, b"changed")

    async def _keep_queues(self) -> None:
        last_renew = time.monotonic()
        while True:
            await asyncio.sleep(_QUEUE_REFRESH_S)
            try:
                if time.monotonic() - last_renew >= _QUEUE_RENEW_S:
                    await self._announce_queues(announce=False)
                    last_renew = time.monotonic()
                await self._refresh_queues()
            except (*_TRANSIENT, ResponseError) as exc:
                log.info("queue registry refresh failed", error=repr(exc))

    # ---- pub/sub reader ------------------------------------------------------------------
    async def _subscribe_channel(self, channel: str) -> None:
        assert self._pubsub is not None
        self._confirmed.setdefault(channel, asyncio.Event())
        await self._pubsub.subscribe(channel)

    async def _wait_confirmed(self, name: str, timeout: float = 5.0) -> None:
        event = self._confirmed.get(name)
        if event is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)

    async def _read_pubsub(self) -> None:
        """Read the pub/sub connection and dispatch what comes. A connection silent for
        ``_PUBSUB_PING_S`` is pinged; one that still says nothing ``_PUBSUB_PONG_WAIT_S``
        later is dropped (a half-open socket never fails a read: it only stays empty), and
        the next read reconnects and resubscribes."""
        pubsub = self._pubsub
        assert pubsub is not None
        loop = asyncio.get_running_loop()
        heard: float = loop.time()  # when an item last came
        pinged: float | None = None  # when the connection was pinged since
        while True:
            try:
                item = await pubsub.get_message(timeout=_POLL_S)
                if item is None:
                    # counted from the ping, and only after a read that found nothing: an
                    # event loop kept busy elsewhere does not make a connection look dead
                    now = loop.time()
                    if pinged is None and now - heard > _PUBSUB_PING_S:
                        await pubsub.ping()  # its pong comes back as an item
                        pinged = now
                    elif pinged is not None and now - pinged > _PUBSUB_PONG_WAIT_S:
                        raise RedisTimeoutError(f"no pong in {now - pinged:.1f}s on pub/sub")
                    continue
            except (*_TRANSIENT, RuntimeError) as exc:
                log.info("pub/sub read failed; reconnecting", error=repr(exc))
                # drop the socket: the next read reconnects and resubscribes (redis-py's
                # on_connect); without this a half-closed socket lingers until a health check
                if pubsub.connection is not None:
                    with contextlib.suppress(*_TRANSIENT, RedisError):
                        await pubsub.connection.disconnect()
                await asyncio.sleep(_RETRY_PAUSE_S)
                heard, pinged = loop.time(), None  # the new connection's own time
                continue
            heard, pinged = loop.time(), None
            try:
                await self._dispatch(item)
            except Exception:  # one bad item must not stop every plain subscription
                log.exception("pub/sub dispatch failed", item_type=item.get("type"))

    async def _dispatch(self, item: dict[str, Any]) -> None:
        """Route one pub/sub item: to subscriptions, a request inbox, or the registry."""
        kind = item["type"]
        if kind == "pmessage":
            channel = _text(item["channel"])
            reply, data = unframe(item["data"])
            subject = self._local(channel)
            for sub in self._by_glob.get(_text(item["pattern"]), ()):
                if subject_matches(sub.pattern, subject):
                    sub.offer(subject, reply, data)
        elif kind == "message":
            channel = _text(item["channel"])
            future = self._inboxes.get(channel)
            if future is not None:
                if not future.done():
                    future.set_result(item["data"])
            elif channel == self._control_channel:
                await self._refresh_queues()
            else:
                reply, data = unframe(item["data"])
                subject = self._local(channel)
                for sub in self._by_channel.get(channel, ()):
                    sub.offer(subject, reply, data)
        elif kind in ("subscribe", "psubscribe"):
            event = self._confirmed.get(_text(item["channel"]))
            if event is not None:
                event.set()

    # ---- subscribe -----------------------------------------------------------------------
    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> _PlainSub:
        """Plain subscription; returns once the server has registered it (see module doc)."""
        check_subject(subject, pattern=True)
        if is_durable(subject):
            raise BusError(f"{subject!r} is a durable subject: use consume()")
        if queue is not None:
            check_name(queue, "queue group")
        self._r_or_raise()
        sub = _PlainSub(self, subject, handler, queue)
        self._plain.append(sub)
        if queue is not None:
            await self._announce_queues(announce=True)
            await self._refresh_queues()
            return sub
        pubsub = self._pubsub
        assert pubsub is not None
        if sub.glob is None:
            self._by_channel.setdefault(sub.wire, []).append(sub)
            await self._subscribe_channel(sub.wire)
            await self._wait_confirmed(sub.wire)
        else:
            first = sub.glob not in self._by_glob
            self._by_glob.setdefault(sub.glob, []).append(sub)
            if first:
                self._confirmed.setdefault(sub.glob, asyncio.Event())
                await pubsub.psubscribe(sub.glob)
                await self._wait_confirmed(sub.glob)
        return sub

    async def _remove_plain(self, sub: _PlainSub) -> None:
        if sub in self._plain:
            self._plain.remove(sub)
        pubsub = self._pubsub
        if sub.queue is not None:
            self._routes = {}
            return
        if sub.glob is None:
            subs = self._by_channel.get(sub.wire, [])
            if sub in subs:
                subs.remove(sub)
            if not subs and pubsub is not None:
                self._by_channel.pop(sub.wire, None)
                self._confirmed.pop(sub.wire, None)
                with contextlib.suppress(*_TRANSIENT):
                    await pubsub.unsubscribe(sub.wire)
        else:
            subs = self._by_glob.get(sub.glob, [])
            if sub in subs:
                subs.remove(sub)
            if not subs and pubsub is not None:
                self._by_glob.pop(sub.glob, None)
                self._confirmed.pop(sub.glob, None)
                with contextlib.suppress(*_TRANSIENT):
                    await pubsub.punsubscribe(sub.glob)

    async def consume(
        self,
        subject: str,
        handler: Handler,
        *,
        group: str,
        options: DurableOptions | None = None,
    ) -> _Member:
        """Join ``group`` on a durable ``subject``; the group is created at the start of the
        stream (deliver-all) on first use. Raises BusError for a plain subject or bad group."""
        check_subject(subject)
        if not is_durable(subject):
            raise BusError(f"{subject!r} is not a durable subject: use subscribe()")
        check_name(group, "group name")
        member = _Member(self, subject, group, handler, options or DurableOptions())
        try:
            await self._ensure_group(member.key, group)
        except (*_TRANSIENT, ResponseError) as exc:
            raise BusError(f"cannot create group {group!r} on {member.key!r}: {exc!r}") from None
        member.start()
        self._members.append(member)
        return member

    async def _ensure_group(self, key: str, group: str) -> None:
        try:
            await self._r_or_raise().xgroup_create(key, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((key, group))

    async def request(self, msg: Message, *, timeout: float = 5.0) -> Message:
        """Publish on a plain subject with a private reply inbox; BusTimeout at once when
        nobody subscribes to it, else when no reply comes in time."""
        wire, durable = self._resolve(msg.subject)
        if durable:
            raise BusError("request/reply runs on plain subjects only")
        check_size(msg.subject, len(msg.wire_bytes()), self.max_message_bytes)
        inbox = f"{self.settings.prefix}_inbox.{uuid.uuid4().hex}"
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inboxes[inbox] = future
        pubsub = self._pubsub
        assert pubsub is not None
        try:
            await self._subscribe_channel(inbox)
            await self._wait_confirmed(inbox)
            if not await self._send_plain(msg.subject, wire, msg.wire_bytes(), reply=inbox):
                raise BusTimeout(f"no responder on {msg.subject!r}")  # as NATS says at once
            data = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise BusTimeout(f"no reply on {msg.subject!r} within {timeout}s") from None
        finally:
            self._inboxes.pop(inbox, None)
            self._confirmed.pop(inbox, None)
            with contextlib.suppress(*_TRANSIENT):
                await pubsub.unsubscribe(inbox)
        check_reply(msg.subject, data)
        reply, reason = parse_or_reason(data)
        if reply is None:
            await self._quarantine(msg.subject, data, dedupe_id=None)
            raise BusError(f"reply on {msg.subject!r} failed validation: {reason}")
        return reply

    # ---- delivery ------------------------------------------------------------------------
    async def _deliver_plain(
        self, sub: _PlainSub, subject: str, reply_to: str, data: bytes
    ) -> None:
        try:
            msg = _VALIDATE_JSON(data)
        except ValidationError:
            # once per publish, however many subscriptions it reached (a queue group: once)
            if self._quarantined.first(subject, data, sub.receiver, every=sub.queue is None):
                await self._quarantine(subject, data, dedupe_id=None)
            return
        try:
            reply = await sub.handler(msg)
        except Exception as exc:  # a plain subscriber's failure loses only its own copy
            log.warning("handler failed", subject=msg.subject, type=msg.type, error=repr(exc))
            return
        if reply is not None and reply_to:
            # over max_message_bytes: a refusal in its place (see plantcrew.bus.base)
            data = reply_bytes(reply, subject=subject, limit=self.max_message_bytes)
            try:
                await self._r_or_raise().publish(reply_to, data)
            except (BusError, *_TRANSIENT) as exc:  # at most once: the requester times out
                log.warning("reply not sent", subject=subject, type=reply.type, error=repr(exc))

    async def _deliver_durable(
        self, member: _Member, entry_id: bytes, data: bytes, delivered: int
    ) -> None:
        r = self._r_or_raise()
        key = f"{member.group}.{_text(entry_id)}"
        try:
            msg = _VALIDATE_JSON(data)
        except ValidationError:
            await self._quarantine(member.subject, data, dedupe_id=key)
            await r.xack(member.key, member.group, entry_id)
            return
        options = member.options
        if delivered > options.max_deliver:
            # the member that had the last allowed delivery died before settling it
            reason = f"delivered {delivered - 1} times without an acknowledgement"
            await self._give_up(member, entry_id, data, msg, reason, delivered - 1, key)
            return
        task = member.handling = asyncio.ensure_future(member.handler(msg))
        try:
            done, _ = await asyncio.wait({task}, timeout=options.ack_wait_s)
        finally:
            member.handling = None
        if not done:
            # ack wait expired: redeliver; the late handler keeps running, its ack is void
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            task.add_done_callback(
                functools.partial(settle_late, subject=member.subject, msg_id=str(msg.id))
            )
            reason = ack_wait_reason(options.ack_wait_s)
        elif task.cancelled():
            if member.stopping:
                return  # unsubscribe hands the entry back
            reason = HANDLER_CANCELLED  # from inside: a failed delivery like any other
        elif (exc := task.exception()) is not None:
            reason = failure_reason(exc)
        else:
            await r.xack(member.key, member.group, entry_id)
            return
        if delivered >= options.max_deliver:
            await self._give_up(member, entry_id, data, msg, reason, delivered, key)
        else:
            log.info(
                "redelivering",
                subject=member.subject,
                id=str(msg.id),
                reason=reason,
                delivered=delivered,
            )
            metrics.redelivered(member.subject)
            await member.nak(entry_id, options.backoff(delivered))

    async def _give_up(
        self,
        member: _Member,
        entry_id: bytes,
        data: bytes,
        msg: Message,
        reason: str,
        attempts: int,
        key: str,
    ) -> None:
        log.warning("dead-lettered", subject=member.subject, id=str(msg.id), reason=reason)
        metrics.dead_lettered(member.subject, quarantined=False)
        if member.subject != Subjects.DLQ:
            letter = dead_letter(
                subject=member.subject,
                reason=reason,
                raw=data,
                attempts=attempts,
                quarantined=False,
                original=msg,
            )
            wire, _ = self._resolve(Subjects.DLQ)
            await self._store(wire, letter.wire_bytes(), f"dlq.{key}")
        await self._r_or_raise().xack(member.key, member.group, entry_id)

    async def _quarantine(self, subject: str, data: bytes, *, dedupe_id: str | None) -> None:
        """Store a ``DeadLetter`` (quarantined) for bytes that are not a valid ``Message``."""
        _, reason = parse_or_reason(data)
        log.warning("quarantined", subject=subject, reason=reason)
        metrics.dead_lettered(subject, quarantined=True)
        if subject == Subjects.DLQ:
            return
        letter = dead_letter(
            subject=subject, reason=reason or "invalid", raw=data, attempts=1, quarantined=True
        )
        wire, _ = self._resolve(Subjects.DLQ)
        await self._store(
            wire, letter.wire_bytes(), f"dlq.{dedupe_id}" if dedupe_id else str(letter.id)
        )

    # ---- quiesce -------------------------------------------------------------------------
    async def quiesce(self, timeout: float = 10.0) -> bool:
        """Best effort: wait until no plain delivery is queued or running, no queue list holds
        anything, and every group this bus consumes reports no lag and nothing pending."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        r = self._r_or_raise()
        while True:
            await asyncio.sleep(0.01)
            try:
                settled = await self._settled(r)
            except (*_TRANSIENT, ResponseError):
                settled = False
            if settled:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def _settled(self, r: Redis) -> bool:
        if any(sub.busy() for sub in self._plain) or any(m.current for m in self._members):
            return False
        for sub in self._plain:
            if sub.list_key is not None and await r.llen(sub.list_key):
                return False
        by_key: dict[str, set[str]] = {}
        for key, group in self._groups:
            by_key.setdefault(key, set()).add(group)
        for key, groups in by_key.items():
            last_id: Any = None
            for info in await r.xinfo_groups(key):
                if _text(info["name"]) not in groups:
                    continue
                if info["pending"]:
                    return False
                lag = info.get("lag")
                if lag is None:  # Redis < 7, or a lag Redis cannot tell: compare the ids
                    if last_id is None:
                        last_id = (await r.xinfo_stream(key))["last-generated-id"]
                    if _text(info["last-delivered-id"]) != _text(last_id):
                        return False
                elif lag:
                    return False
        return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
