"""``nats://``: the bus on NATS (plain subjects) and JetStream (durable subjects).

URL: ``nats://[user:pass@]host:4222[?namespace=NS&sync=always&replicas=3&dedupe_window=120&
max_message_bytes=N&ping_interval=5&max_outstanding_pings=3]``
(``tls://`` for TLS). The query is plantcrew's, never sent to the server:

- ``namespace``: prefixes every subject (``NS.crew.events``), the stream and so every
  consumer, so several plants or test runs share one server without seeing each other.
- ``sync=always``: production durability. JetStream acknowledges a stored message before it
  is on disk and fsyncs only every ``sync_interval`` (2 minutes by default); DESIGN.md explains
  why that loses acknowledged writes on a power cut. ``sync_interval`` is a *server* setting
  (``jetstream { sync_interval: always }``, nats-server >= 2.10, see ``infra/nats.conf``); a
  stream cannot ask for it. With ``sync=always`` the bus refuses (BusError) a server older than
  2.10, which cannot fsync on every write, instead of silently running without it.
- ``replicas``: stream replicas (1 on a single server, 3 in a cluster: the other defence).
- ``dedupe_window``: seconds during which a repeated message id is dropped (default 120).
- ``max_message_bytes``: the largest message taken (see ``plantcrew.bus.base``); it must fit
  the server's ``max_payload`` with ``NATS_HEADER_RESERVE`` bytes of headers (BusError at
  connect). Unset, it is ``DEFAULT_MAX_MESSAGE_BYTES``, lowered to fit a server configured
  with a smaller ``max_payload``.
- ``ping_interval`` (seconds, default 5) and ``max_outstanding_pings`` (default 3): the client
  pings the server every ``ping_interval`` and, when more than ``max_outstanding_pings`` pings
  go unanswered (a silent network partition: no error, no close), calls the connection stale,
  drops it and reconnects (every 0.5 s, forever), so a partition is noticed within about
  ``ping_interval * (max_outstanding_pings + 1)`` seconds (20 s by default). Lower them to
  notice sooner, at the cost of reconnecting through a short stall.

Plain subjects (``telemetry.*``, ``crew.control``, ``crew.approvals``) run on core NATS:
wildcards and queue groups are NATS's own, ``request`` uses NATS request/reply with an inbox.

Durable subjects (``crew.events``, ``crew.tasks.*``, ``crew.dlq``) live in one JetStream
stream per namespace (``PLANTCREW`` or ``PLANTCREW_<NS>``), file storage, limits retention
(kept for ``max_age`` 7 days, so a group created later still gets everything: deliver-all).
``publish`` sends with the ``Nats-Msg-Id`` header set to ``<subject>:<message id>`` (a SHA-256
of it when longer than ``_MAX_DEDUPE_ID`` characters, so the header fits its reserve; the server
drops a repeat inside the dedupe window; that window is the stream's, shared by every durable
subject, so the subject is part of the key: the same id on another subject is another publish,
as on the other backends; ``publish_raw`` uses a fresh id per call) and waits for the PubAck,
retrying through a reconnect until ``publish_timeout`` (10 s): the client buffers each attempt
made while disconnected and sends them all on reconnect, so the id is what stores it once.
``consume`` binds a durable pull consumer named after the group and subject (recreated,
deliver-all, when the server no longer has it); each member takes one message at a time from
the pull requests it shares with the group's other members in the process (``nats_pull``),
acknowledges after the handler returns, and naks with the backoff delay when it raises or
overruns ``ack_wait_s`` (the server's own ack wait is set a little longer, and
raised when a member joins with a longer one, so it only fires for a member that died). The
server's ``max_deliver`` is unlimited: the bus counts deliveries itself (``num_delivered``)
and, after the last allowed one fails, stores a ``DeadLetter`` on ``crew.dlq`` before
acknowledging the original, so every message ends processed, dead-lettered or quarantined and
none is dropped because the server gave up on it. ``unsubscribe`` naks what the member holds,
so another member gets it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from pydantic import ValidationError

from plantcrew import metrics, tracing
from plantcrew.bus.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HANDLER_CANCELLED,
    NAME,
    NATS_HEADER_RESERVE,
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
)
from plantcrew.bus.nats_pull import PullFeed
from plantcrew.errors import BusError, BusTimeout
from plantcrew.messages import Message, Subjects
from plantcrew.settings import redacted_url as redacted

log = structlog.get_logger("plantcrew.bus.nats")

_VALIDATE_JSON = Message.__pydantic_validator__.validate_json
_SUBJECT_CACHE_LIMIT = 10_000
_FETCH_EXPIRY_S = 2.0
_RETRY_PAUSE_S = 0.25
_ACK_WAIT_GRACE_S = 1.0
_CONSUMER_CHECK_S = 5.0
_STREAM_MAX_AGE_S = 7 * 24 * 3600.0
_DURABLE_FILTERS = ("crew.events", "crew.tasks.>", "crew.dlq")
_MSG_ID_HEADER_BYTES = len(b"NATS/1.0\r\nNats-Msg-Id: \r\n\r\n")  # HPUB header block, id aside
_MAX_DEDUPE_ID = NATS_HEADER_RESERVE - _MSG_ID_HEADER_BYTES  # longer ids are hashed to fit
# errors after which a publish or fetch is worth retrying (reconnect in progress, server busy)
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True)
class NatsSettings:
    """What a ``nats://`` URL asks for (see the module doc); ``server`` has no query."""

    server: str
    namespace: str = ""
    sync_always: bool = False
    replicas: int = 1
    dedupe_window_s: float = 120.0
    connect_timeout_s: float = 5.0
    publish_timeout_s: float = 10.0
    max_message_bytes: int | None = None  # None: the default, fitted to the server
    ping_interval_s: float = 5.0
    max_outstanding_pings: int = 3

    @classmethod
    def from_url(cls, url: str) -> NatsSettings:
        """Parse ``url``; raises BusError for an unknown or malformed query value."""
        parts = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {
            "namespace",
            "sync",
            "replicas",
            "dedupe_window",
            "connect_timeout",
            "publish_timeout",
            "max_message_bytes",
            "ping_interval",
            "max_outstanding_pings",
        }
        unknown = set(query) - known
        if unknown:
            raise BusError(f"unknown query parameter(s) {sorted(unknown)} in {redacted(url)!r}")
        limit = max_message_bytes(query, repr(redacted(url)))
        namespace = query.get("namespace", "")
        if namespace and not NAME.fullmatch(namespace):
            raise BusError(f"bad namespace {namespace!r} in {redacted(url)!r}: use [A-Za-z0-9_-]")
        sync = query.get("sync", "")
        if sync not in ("", "always", "interval"):
            raise BusError(
                f"sync must be 'always' or 'interval', got {sync!r} in {redacted(url)!r}"
            )
        try:
            return cls(
                server=urlunparse(parts._replace(query="", fragment="")),
                namespace=namespace,
                sync_always=sync == "always",
                replicas=int(query.get("replicas", "1")),
                dedupe_window_s=float(query.get("dedupe_window", "120")),
                connect_timeout_s=float(query.get("connect_timeout", "5")),
                publish_timeout_s=float(query.get("publish_timeout", "10")),
                max_message_bytes=limit,
                ping_interval_s=_positive(query, "ping_interval", "5", float, url),
                max_outstanding_pings=_positive(query, "max_outstanding_pings", "3", int, url),
            )
        except ValueError as exc:
            raise BusError(f"bad number in {redacted(url)!r}: {exc}") from None

    @property
    def prefix(self) -> str:
        """Subject prefix: ``"NS."`` or ``""``."""
        return f"{self.namespace}." if self.namespace else ""

    @property
    def stream(self) -> str:
        """Name of the namespace's JetStream stream."""
        return f"PLANTCREW_{self.namespace}" if self.namespace else "PLANTCREW"


def _positive(query: dict[str, str], name: str, default: str, kind: Any, url: str) -> Any:
    """``query[name]`` (or ``default``) read by ``kind`` (int or float); ValueError when it
    does not read, BusError (the URL's password hidden) when it is not above 0."""
    value = kind(query.get(name, default))
    if not value > 0:
        raise BusError(f"{name} must be above 0, got {value!r} in {redacted(url)!r}")
    return value


CONSUMER_NAME_CHARS = 200
"""The longest JetStream consumer name made: nats-server refuses longer ones (seen here with
2.9.10: a 120-character group on a 255-character subject), and a member then never got a
message. A longer ``group__subject`` keeps its start and a hash of the whole."""


def consumer_name(group: str, subject: str) -> str:
    """The durable JetStream consumer shared by ``group``'s members on ``subject``:
    ``<group>__<subject with dots as underscores>``, or, past :data:`CONSUMER_NAME_CHARS`,
    its first characters, ``__`` and 32 hex digits of its SHA-256 (the same in every process,
    so members still share it)."""
    name = f"{group}__{subject.replace('.', '_')}"
    if len(name) <= CONSUMER_NAME_CHARS:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"{name[: CONSUMER_NAME_CHARS - 34]}__{digest}"


class _PlainSub:
    """A core NATS subscription (``subscribe``)."""

    def __init__(self, bus: NatsBus, pattern: str, handler: Handler, queue: str | None) -> None:
        self.bus, self.pattern, self.handler = bus, pattern, handler
        self.handler = tracing.instrument_handler(handler, subject=pattern)
        self.sub: Any = None
        self.active = 0
        # who receives a copy of a publish (see QuarantineOnce): this, or its queue group
        self.receiver: object = self if queue is None else (queue, pattern)
        self.every = queue is None

    async def on_msg(self, nmsg: Msg) -> None:
        # the hot path of telemetry: keep it short (validation is pydantic-core's, in full)
        self.active += 1
        try:
            try:
                msg = _VALIDATE_JSON(nmsg.data)
            except ValidationError:
                seen = self.bus._quarantined
                if not seen.first(nmsg.subject, nmsg.data, self.receiver, every=self.every):
                    return  # a copy of a publish this bus quarantined
                try:
                    await self.bus._quarantine(nmsg.subject, nmsg.data, key=None)
                except BusError as exc:  # broker unavailable: logged, as plain is at most once
                    log.error("quarantine failed", subject=nmsg.subject, error=repr(exc))
                return
            try:
                reply = await self.handler(msg)
            except Exception as exc:  # a plain subscriber's failure loses only its own copy
                log.warning("handler failed", subject=msg.subject, type=msg.type, error=repr(exc))
                return
            if reply is not None and nmsg.reply:
                await self.bus._reply(nmsg, reply)
        finally:
            self.active -= 1

    def busy(self) -> bool:
        pending = self.sub.pending_msgs if self.sub is not None else 0
        return bool(self.active or pending)

    async def unsubscribe(self) -> None:
        """Stop receiving; messages not yet handled are dropped (plain: at most once)."""
        if self in self.bus._plain:
            self.bus._plain.remove(self)
        if self.sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.sub.unsubscribe()


class _Member:
    """One member of a durable consumer group (``consume``): a loop taking one message at a
    time from the pull feed it shares with the group's other members in this process."""

    def __init__(
        self,
        bus: NatsBus,
        subject: str,
        consumer: str,
        handler: Handler,
        options: DurableOptions,
        feed: PullFeed,
    ) -> None:
        self.bus, self.subject, self.consumer = bus, subject, consumer
        self.handler, self.options, self.feed = handler, options, feed
        self.handler = tracing.instrument_handler(handler, subject=subject, group=consumer)
        self.current: Msg | None = None
        self.handling: asyncio.Future[Message | None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"nats-member-{self.consumer}")

    async def _run(self) -> None:
        while not self.stopping:
            nmsg = await self.feed.take()
            self.current = nmsg
            try:
                await self.bus._deliver_durable(self, nmsg)
            except (*_TRANSIENT, BusError, nats.errors.Error) as exc:
                # ack/nak or dead-letter publish failed: the server redelivers after ack wait
                log.info("settling failed", consumer=self.consumer, error=repr(exc))
            except Exception:  # a bug must not silently stop the member
                log.exception("delivery failed", consumer=self.consumer)
            finally:
                self.current = None

    async def unsubscribe(self) -> None:
        """Stop; hand what this member holds back to the group (nak, no delay)."""
        self.stopping = True
        in_flight, handling = self.current, self.handling
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if handling is not None and not handling.done():
            handling.cancel()
        held: list[Msg] = [in_flight] if in_flight is not None else []
        if self in self.bus._members:
            self.bus._members.remove(self)
            held += await self.bus._leave(self.feed)  # the last member: delivered, not taken
        for nmsg in held:
            with contextlib.suppress(*_TRANSIENT, nats.errors.Error):
                await nmsg.nak()


class NatsBus:
    """The bus on NATS + JetStream (see module doc). Create with ``connect("nats://...")``.

    Raises BusError (naming the URL, password hidden) when the server cannot be reached, when
    a durable publish is not acknowledged within ``publish_timeout``, for a bad subject, or
    when ``max_message_bytes`` does not fit the server's ``max_payload``; MessageTooLarge for
    a message over ``max_message_bytes`` (as every backend).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings = NatsSettings.from_url(url)
        self.max_message_bytes = self.settings.max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._plain: list[_PlainSub] = []
        self._members: list[_Member] = []
        self._late: set[asyncio.Future[Message | None]] = set()
        self._subjects: dict[str, tuple[str, bool]] = {}
        self._consumers: set[str] = set()
        self._feeds: dict[str, PullFeed] = {}  # consumer -> the pulls of its members here
        self._feed_options: dict[str, DurableOptions] = {}  # the longest ack wait asked
        self._checked: dict[str, float] = {}  # consumer -> when its existence was last asked
        self._quarantined = QuarantineOnce()

    # ---- lifecycle -----------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect (reconnecting forever afterwards) and make sure the stream exists."""
        s = self.settings
        nc = Client()

        async def on_error(exc: Exception) -> None:
            log.debug("nats connection error", url=redacted(self.url), error=repr(exc))

        async def on_disconnect() -> None:
            if self._nc is not None:  # not our own close()
                log.warning("nats disconnected", url=redacted(self.url))

        async def on_reconnect() -> None:
            log.info("nats reconnected", url=redacted(self.url))
            for feed in self._feeds.values():
                feed.reconnected()

        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[s.server],
                    name="plantcrew",
                    connect_timeout=max(1, int(s.connect_timeout_s)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]
                    # a silent partition is noticed after max_outstanding_pings + 1 intervals
                    ping_interval=s.ping_interval_s,  # type: ignore[arg-type]
                    max_outstanding_pings=s.max_outstanding_pings,
                    error_cb=on_error,
                    # subjects are checked by check_subject (stricter, once per subject)
                    skip_subject_validation=True,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                timeout=s.connect_timeout_s,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise BusError(
                f"cannot reach NATS at {redacted(self.url)}: {exc!r}; "
                "start it with: docker compose -f infra/compose.yaml up -d nats"
            ) from None
        self._nc, self._js = nc, nc.jetstream(timeout=s.publish_timeout_s)
        fits = nc.max_payload - NATS_HEADER_RESERVE
        if s.max_message_bytes is None:
            self.max_message_bytes = min(DEFAULT_MAX_MESSAGE_BYTES, fits)
        elif s.max_message_bytes > fits:
            await self.close()
            raise BusError(
                f"max_message_bytes={s.max_message_bytes} in {redacted(self.url)} does not fit "
                f"the server's max_payload of {nc.max_payload} bytes with "
                f"{NATS_HEADER_RESERVE} bytes of headers: at most {fits} (or raise max_payload "
                "in the nats-server config)"
            )
        if s.sync_always:
            version = nc.connected_server_version
            if (version.major, version.minor) < (2, 10):
                await nc.close()
                raise BusError(
                    f"sync=always asked of {redacted(self.url)}, but nats-server "
                    f"{version.major}.{version.minor}.{version.patch} cannot fsync every write "
                    "(sync_interval needs nats-server >= 2.10; see infra/nats.conf)"
                )
        await self._ensure_stream()

    async def close(self) -> None:
        """Hand back in-flight durable work, stop every subscription, drain and disconnect."""
        for member in list(self._members):
            await member.unsubscribe()
        for sub in list(self._plain):
            await sub.unsubscribe()
        for task in list(self._late):
            task.cancel()
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            # the server may be down: closing then fails on the dead socket, with nothing to lose
            with contextlib.suppress(OSError, nats.errors.Error):
                await nc.close()

    def _nc_or_raise(self) -> Client:
        if self._nc is None:
            raise BusError(f"bus {redacted(self.url)} is closed (or never connected)")
        return self._nc

    def _js_or_raise(self) -> JetStreamContext:
        if self._js is None:
            raise BusError(f"bus {redacted(self.url)} is closed (or never connected)")
        return self._js

    def stream_config(self) -> StreamConfig:
        """The JetStream stream of this namespace: durable subjects, file storage, dedupe."""
        s = self.settings
        return StreamConfig(
            name=s.stream,
            description="plantcrew durable subjects: crew events, tasks and dead letters",
            subjects=[s.prefix + f for f in _DURABLE_FILTERS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=_STREAM_MAX_AGE_S,
            num_replicas=s.replicas,
            duplicate_window=s.dedupe_window_s,
        )

    async def _ensure_stream(self) -> None:
        js, config = self._js_or_raise(), self.stream_config()
        try:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                # exists with another config (an older plantcrew, or changed settings): align it
                await js.update_stream(config)
        except _TRANSIENT as exc:
            raise BusError(f"JetStream not available at {redacted(self.url)}: {exc!r}") from None
        except nats.js.errors.APIError as exc:  # e.g. another stream already takes the subjects
            raise BusError(
                f"cannot create stream {config.name} on {redacted(self.url)}: {exc}"
            ) from None

    # ---- subjects ------------------------------------------------------------------------
    def _resolve(self, subject: str) -> tuple[str, bool]:
        """``(subject on the wire, durable?)``, validated once and cached."""
        hit = self._subjects.get(subject)
        if hit is None:
            check_subject(subject)
            if len(self._subjects) >= _SUBJECT_CACHE_LIMIT:
                self._subjects.clear()
            hit = self._subjects[subject] = (self.settings.prefix + subject, is_durable(subject))
        return hit

    def _local(self, wire_subject: str) -> str:
        prefix = self.settings.prefix
        return wire_subject[len(prefix) :] if wire_subject.startswith(prefix) else wire_subject

    # ---- publish -------------------------------------------------------------------------
    async def publish(self, msg: Message, subject: str | None = None) -> None:
        """Send ``msg``; on a durable subject, wait until JetStream stored it (or it was a
        repeat of a stored id). Raises BusError when not stored within ``publish_timeout``."""
        # the telemetry hot path: a cached subject lookup, one serialization, one buffer append
        subject = msg.subject if subject is None else subject
        msg = tracing.stamp(msg, subject)
        hit = self._subjects.get(subject)
        wire, durable = hit if hit is not None else self._resolve(subject)
        data = msg.wire_bytes()
        if len(data) > self.max_message_bytes:  # (a call only to raise: this runs per message)
            check_size(subject, len(data), self.max_message_bytes)
        if durable:
            await self._store(wire, data, str(msg.id))
            return
        nc = self._nc
        if nc is None:
            raise BusError(f"bus {redacted(self.url)} is closed (or never connected)")
        try:
            await nc.publish(wire, data)
        except nats.errors.Error as exc:
            raise self._publish_error(wire, len(data), exc) from None

    async def publish_raw(self, subject: str, data: bytes) -> None:
        """Send bytes as they are; receivers validate them and quarantine what does not parse."""
        wire, durable = self._resolve(subject)
        check_size(subject, len(data), self.max_message_bytes)
        if durable:
            # a fresh dedupe id: the attempts of this one call are stored once
            await self._store(wire, data, f"raw-{uuid.uuid4().hex}")
            return
        try:
            await self._nc_or_raise().publish(wire, data)
        except nats.errors.Error as exc:
            raise self._publish_error(wire, len(data), exc) from None

    async def _reply(self, nmsg: Msg, reply: Message) -> None:
        """Send a plain subscriber's ``reply`` to the requester of ``nmsg`` (a refusal in its
        place when over ``max_message_bytes``: see ``plantcrew.bus.base``); a reply that cannot
        be sent is logged (the requester times out), as plain delivery is at most once."""
        subject = self._local(nmsg.subject)
        data = reply_bytes(reply, subject=subject, limit=self.max_message_bytes)
        try:
            await self._nc_or_raise().publish(nmsg.reply, data)
        except (BusError, nats.errors.Error) as exc:
            log.warning("reply not sent", subject=subject, type=reply.type, error=repr(exc))

    def _publish_error(self, wire: str, size: int, exc: nats.errors.Error) -> BusError:
        """The BusError of a failed core NATS publish of ``size`` bytes to ``wire``."""
        if isinstance(exc, nats.errors.MaxPayloadError):
            return self._too_big(wire, size)
        return BusError(f"publish to {wire!r} on {redacted(self.url)} failed: {exc!r}")

    def _too_big(self, wire: str, size: int) -> BusError:
        """A message within ``max_message_bytes`` the server still refuses (its
        ``max_payload`` was lowered since connect; or a bus-made dead letter over it)."""
        limit = self._nc_or_raise().max_payload
        return BusError(
            f"message of {size} bytes for {wire!r} is over the max_payload of "
            f"{limit} bytes of {redacted(self.url)} (a nats-server setting, 1 MB by default)"
        )

    async def _store(self, wire: str, data: bytes, msg_id: str) -> None:
        js = self._js_or_raise()
        # the stream's dedupe window spans every durable subject: scope the id by subject
        dedupe = f"{wire}:{msg_id}"
        if len(dedupe) > _MAX_DEDUPE_ID:  # (ASCII: subjects and ids are)
            dedupe = "sha256:" + hashlib.sha256(dedupe.encode()).hexdigest()
        headers = {"Nats-Msg-Id": dedupe}
        # the server counts the headers too, and answers a message over max_payload by closing
        # the connection for good (nats-py checks the payload alone): refuse it here
        size = len(data) + _MSG_ID_HEADER_BYTES + len(dedupe.encode())
        if size > self._nc_or_raise().max_payload:
            raise self._too_big(wire, size)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.publish_timeout_s
        while True:
            attempt = min(2.0, max(0.1, deadline - loop.time()))
            try:
                await js.publish(wire, data, timeout=attempt, headers=headers)
                return
            except _TRANSIENT as exc:
                # safe to repeat: the message id makes the server drop a second copy (the
                # client also buffers each attempt made while disconnected, sent on reconnect)
                nc = self._nc
                if loop.time() >= deadline or nc is None:
                    state = (
                        "the bus was closed"
                        if nc is None
                        else "no acknowledgement"
                        if nc.is_connected
                        else "the connection is down"
                    )
                    raise BusError(
                        f"publish to {wire!r} not acknowledged by {redacted(self.url)} "
                        f"within {self.settings.publish_timeout_s}s: {state}; last error {exc!r}"
                    ) from None
                if isinstance(exc, nats.js.errors.NoStreamResponseError):
                    with contextlib.suppress(BusError, *_TRANSIENT):
                        await self._ensure_stream()
                await asyncio.sleep(_RETRY_PAUSE_S)
            except nats.js.errors.APIError as exc:
                raise BusError(f"publish to {wire!r} refused by JetStream: {exc}") from None

    # ---- subscribe -----------------------------------------------------------------------
    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> _PlainSub:
        """Core NATS subscription; ``*``/``>`` wildcards and queue groups are the server's."""
        check_subject(subject, pattern=True)
        if is_durable(subject):
            raise BusError(f"{subject!r} is a durable subject: use consume()")
        if queue is not None:
            check_name(queue, "queue group")
        sub = _PlainSub(self, subject, handler, queue)
        sub.sub = await self._nc_or_raise().subscribe(
            self.settings.prefix + subject, queue=queue or "", cb=sub.on_msg
        )
        self._plain.append(sub)
        return sub

    async def consume(
        self,
        subject: str,
        handler: Handler,
        *,
        group: str,
        options: DurableOptions | None = None,
    ) -> _Member:
        """Join ``group`` on a durable ``subject``; the group's consumer is created (deliver-all)
        on first use. Raises BusError for a plain subject or a bad group name."""
        check_subject(subject)
        if not is_durable(subject):
            raise BusError(f"{subject!r} is not a durable subject: use subscribe()")
        check_name(group, "group name")
        options = options or DurableOptions()
        consumer = consumer_name(group, subject)
        feed, known = self._feeds.get(consumer), self._feed_options.get(consumer)
        if feed is None or known is None or options.ack_wait_s > known.ack_wait_s:
            await self._bind(subject, consumer, options)
            self._feed_options[consumer] = options
        if feed is None:
            feed = self._feeds[consumer] = PullFeed(
                lambda: self._nc,
                stream=self.settings.stream,
                consumer=consumer,
                api_prefix=self._js_or_raise()._prefix,
                ensure=lambda: self._bind(subject, consumer, self._feed_options[consumer]),
                check=lambda: self._check_consumer(consumer),
                expiry_s=_FETCH_EXPIRY_S,
                transient=_TRANSIENT,
            )
            await feed.start()
        feed.members += 1
        member = _Member(self, subject, consumer, handler, options, feed)
        member.start()
        self._members.append(member)
        return member

    async def _leave(self, feed: PullFeed) -> list[Msg]:
        """A member of ``feed`` stopped (see ``PullFeed.left``); with the last, the feed
        closes. Returns the messages delivered to it that no member took (to hand back)."""
        feed.members -= 1
        if feed.members > 0:
            return await feed.left()
        if self._feeds.get(feed.consumer) is feed:
            del self._feeds[feed.consumer]
        return await feed.close()

    async def _bind(self, subject: str, consumer: str, options: DurableOptions) -> None:
        """Make ``consumer`` (deliver-all) when the server lacks it; raise its ack wait to
        ``options``' when that is longer."""
        js, stream = self._js_or_raise(), self.settings.stream
        ack_wait = options.ack_wait_s + _ACK_WAIT_GRACE_S
        try:
            info = await js.consumer_info(stream, consumer)
        except nats.js.errors.NotFoundError:
            config = ConsumerConfig(
                durable_name=consumer,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_deliver=-1,  # the bus counts deliveries and dead-letters itself
                filter_subject=self.settings.prefix + subject,
                max_ack_pending=10_000,
            )
            try:
                await js.add_consumer(stream, config)
            except nats.js.errors.BadRequestError as exc:
                # another member created it first (bind to theirs), or the server refused it
                try:
                    await js.consumer_info(stream, consumer)
                except nats.js.errors.NotFoundError:
                    raise BusError(
                        f"{redacted(self.url)} refused the consumer {consumer!r} of {subject!r}:"
                        f" {exc.description or exc!r}"
                    ) from None
        else:
            # the consumer outlives its members: when ack_wait_s was raised since it was made,
            # raise the server's (never lower it: a member still running with the longer one
            # would see its work redelivered to another member while it is still inside it)
            if (info.config.ack_wait or 0) < ack_wait:
                try:
                    await js.add_consumer(stream, info.config.evolve(ack_wait=ack_wait))
                except nats.js.errors.APIError as exc:
                    log.warning("cannot raise ack wait", consumer=consumer, error=repr(exc))
        self._consumers.add(consumer)

    async def _check_consumer(self, consumer: str) -> None:
        """Raise NotFoundError when ``consumer`` no longer exists on the server (asked at most
        every ``_CONSUMER_CHECK_S`` per consumer, however many members share it; a
        TimeoutError after ``_FETCH_EXPIRY_S`` without an answer)."""
        now = asyncio.get_running_loop().time()
        if now < self._checked.get(consumer, 0.0) + _CONSUMER_CHECK_S:
            return
        self._checked[consumer] = now
        # no longer than a fetch: a question sent as the network went silent leaves with the
        # connection the client then drops as stale, and its answer never comes; the member
        # waits for it before fetching again, so the bus's request timeout (publish_timeout,
        # 10 s) would keep it from work that waits for it for seconds after the reconnect
        await self._js_or_raise().consumer_info(
            self.settings.stream, consumer, timeout=_FETCH_EXPIRY_S
        )

    async def request(self, msg: Message, *, timeout: float = 5.0) -> Message:
        """NATS request/reply on a plain subject; BusTimeout when nobody answers in time."""
        wire, durable = self._resolve(msg.subject)
        if durable:
            raise BusError("request/reply runs on plain subjects only")
        data = msg.wire_bytes()
        check_size(msg.subject, len(data), self.max_message_bytes)
        try:
            resp = await self._nc_or_raise().request(wire, data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise BusTimeout(f"no responder on {msg.subject!r}") from None
        except TimeoutError:
            raise BusTimeout(f"no reply on {msg.subject!r} within {timeout}s") from None
        except nats.errors.MaxPayloadError:
            raise self._too_big(wire, len(data)) from None
        except nats.errors.Error as exc:
            raise BusError(f"request on {wire!r} failed: {exc!r}") from None
        check_reply(msg.subject, resp.data)
        reply, reason = parse_or_reason(resp.data)
        if reply is None:
            await self._quarantine(resp.subject, resp.data, key=None)
            raise BusError(f"reply on {msg.subject!r} failed validation: {reason}")
        return reply

    # ---- durable delivery ----------------------------------------------------------------
    async def _deliver_durable(self, member: _Member, nmsg: Msg) -> None:
        meta = nmsg.metadata
        delivered, seq = meta.num_delivered, meta.sequence.stream
        key = f"{member.consumer}.{seq}"
        try:
            msg = _VALIDATE_JSON(nmsg.data)
        except ValidationError:
            await self._quarantine(nmsg.subject, nmsg.data, key=key)
            await nmsg.ack()
            return
        options = member.options
        if delivered > options.max_deliver:
            # the member that had the last allowed delivery died before settling it
            reason = f"delivered {delivered - 1} times without an acknowledgement"
            await self._give_up(member, nmsg, msg, reason, delivered - 1, key)
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
                return  # unsubscribe hands the message back
            reason = HANDLER_CANCELLED  # from inside: a failed delivery like any other
        elif (exc := task.exception()) is not None:
            reason = failure_reason(exc)
        else:
            await nmsg.ack()
            return
        if delivered >= options.max_deliver:
            await self._give_up(member, nmsg, msg, reason, delivered, key)
        else:
            log.info(
                "redelivering",
                subject=member.subject,
                id=str(msg.id),
                reason=reason,
                delivered=delivered,
            )
            metrics.redelivered(member.subject)
            await nmsg.nak(delay=options.backoff(delivered))

    async def _give_up(
        self, member: _Member, nmsg: Msg, msg: Message, reason: str, attempts: int, key: str
    ) -> None:
        log.warning("dead-lettered", subject=member.subject, id=str(msg.id), reason=reason)
        metrics.dead_lettered(member.subject, quarantined=False)
        if member.subject != Subjects.DLQ:
            letter = dead_letter(
                subject=member.subject,
                reason=reason,
                raw=nmsg.data,
                attempts=attempts,
                quarantined=False,
                original=msg,
            )
            await self._store_letter(letter, key)
        await nmsg.ack()

    async def _quarantine(self, wire_subject: str, data: bytes, *, key: str | None) -> None:
        """Store a ``DeadLetter`` (quarantined) for bytes that are not a valid ``Message``."""
        subject = self._local(wire_subject)
        _, reason = parse_or_reason(data)
        log.warning("quarantined", subject=subject, reason=reason)
        metrics.dead_lettered(subject, quarantined=True)
        if subject == Subjects.DLQ:
            return
        letter = dead_letter(
            subject=subject, reason=reason or "invalid", raw=data, attempts=1, quarantined=True
        )
        await self._store_letter(letter, key)

    async def _store_letter(self, letter: Message, key: str | None) -> None:
        # a stable dedupe key: a crash between storing the letter and acking stores it once
        msg_id = f"dlq.{key}" if key else str(letter.id)
        wire, _ = self._resolve(Subjects.DLQ)
        await self._store(wire, letter.wire_bytes(), msg_id)

    # ---- quiesce -------------------------------------------------------------------------
    async def quiesce(self, timeout: float = 10.0) -> bool:
        """Best effort: flush, then wait until no plain callback runs and every consumer of
        this bus reports nothing pending and nothing awaiting an ack (JetStream consumer info).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        nc, js = self._nc_or_raise(), self._js_or_raise()
        while True:
            try:
                await nc.flush(timeout=max(1, int(deadline - loop.time())))
                await asyncio.sleep(0.01)
                settled = not any(sub.busy() for sub in self._plain)
                settled = settled and not any(m.current is not None for m in self._members)
                settled = settled and not any(f.ready for f in self._feeds.values())
                for consumer in sorted(self._consumers) if settled else ():
                    info = await js.consumer_info(self.settings.stream, consumer)
                    if info.num_pending or info.num_ack_pending:
                        settled = False
                        break
            except (*_TRANSIENT, nats.js.errors.APIError):
                settled = False
            if settled:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
