"""The ``Bus`` protocol every backend implements, and what the backends share.

Two kinds of subject (see ``plantcrew.messages.Subjects``):

- plain subjects (``telemetry.*``, ``crew.control``, ``crew.approvals``): at-most-once
  pub/sub; wildcards ``*`` (one token) and ``>`` (the rest) in subscriptions; queue groups
  share messages between the members of a group.
- durable subjects (``crew.events``, ``crew.tasks.*``, ``crew.dlq``): kept by the broker until
  a consumer group acknowledges them. ``publish`` waits for the broker to store the message and
  drops a second publish of the same message id to the same subject (dedupe: a publisher's
  retry; the same id published on another durable subject is another message, delivered).
  ``consume`` acknowledges after the handler returns, redelivers with backoff when it raises
  or does not return within ``ack_wait_s``, and after ``max_deliver`` deliveries publishes a
  ``DeadLetter`` with the reason on ``crew.dlq``. Messages published before a group first
  consumes are delivered to it (deliver-all).

Every backend validates on publish (a ``Message`` is valid by construction) and on receive:
bytes that do not parse as a ``Message`` are quarantined to ``crew.dlq`` with the validation
errors, never silently dropped.

A malformed plain message is quarantined once by each bus (process) that receives it,
however many of its subscriptions it reaches (``QuarantineOnce``); another process subscribed
to the subject quarantines its own copy: a plain message has no id that would let processes
agree on it without shared state. A durable one is quarantined by each group that reads it.

Every backend refuses alike a message over ``max_message_bytes`` (its serialized bytes; a URL
query option, default ``DEFAULT_MAX_MESSAGE_BYTES``): ``publish``, ``publish_raw`` and
``request`` raise ``MessageTooLarge`` naming subject, size and limit before anything is sent,
so what passes on ``memory://`` passes on the brokers. Dead letters the bus builds itself are
bounded by construction (``dead_letter`` keeps at most 64 k characters of the original) and
are not held to a smaller limit.

A responder's reply to a ``request`` is held to the same limit, by the responder's bus, before
it is sent: a reply over it is not sent (``reply refused``, one warning line naming subject,
type, size and limit); the bus sends a refusal in its place (``REPLY_REFUSED``, a few bytes that
are not a ``Message``, on the requester's private inbox), and the requester's ``request`` raises
``ReplyTooLarge`` (a ``MessageTooLarge``) naming subject, size and the responder's limit at
once, rather than ``BusTimeout`` when its timeout runs out. The request was handled: only its
reply was lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog

from plantcrew.errors import BusError, MessageTooLarge, MessageValidationError, ReplyTooLarge
from plantcrew.messages import DeadLetter, Message, Subjects

_log = structlog.get_logger("plantcrew.bus")

Handler = Callable[[Message], Awaitable[Message | None]]
"""A subscriber: gets a validated message; may return a reply (used by ``request``)."""

DURABLE_PREFIXES = ("crew.events", "crew.tasks.", "crew.dlq")
MAX_SUBJECT_CHARS = 255
NATS_HEADER_RESERVE = 256
"""Bytes of a message's NATS headers the ``nats://`` backend may add (its dedupe id, bounded
to fit): the server's ``max_payload`` counts headers and body together."""
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024 - NATS_HEADER_RESERVE
"""The largest message (serialized bytes) every backend takes by default: nats-server's
default ``max_payload`` (1 MiB) less the NATS header reserve, so a message that fits on
``memory://`` or ``redis://`` also fits on a default ``nats://`` server."""
NAME = re.compile(r"[A-Za-z0-9_\-]+")
"""A subject token, group, queue group or namespace (whole string: ``NAME.fullmatch``)."""


@dataclass(frozen=True)
class DurableOptions:
    """Delivery settings of a durable consumer group.

    ``max_deliver``: deliveries before dead-lettering (>= 1); ``ack_wait_s``: seconds a
    delivery may stay unacknowledged before it is redelivered; ``backoff_s``: delay before the
    n-th redelivery (the last value repeats).
    """

    max_deliver: int = 5
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = field(default=(0.2, 1.0, 5.0, 15.0))

    def __post_init__(self) -> None:
        if self.max_deliver < 1:
            raise BusError(f"max_deliver must be >= 1, got {self.max_deliver}")
        if self.ack_wait_s <= 0:
            raise BusError(f"ack_wait_s must be > 0, got {self.ack_wait_s}")
        if not self.backoff_s or any(b < 0 for b in self.backoff_s):
            raise BusError(f"backoff_s must be non-negative delays, got {self.backoff_s}")

    def backoff(self, delivered: int) -> float:
        """Delay in seconds before redelivering a message delivered ``delivered`` times."""
        return self.backoff_s[min(delivered, len(self.backoff_s)) - 1]


@runtime_checkable
class Subscription(Protocol):
    """A live subscription or consumer; ``unsubscribe`` stops it (in-flight work is handed back)."""

    async def unsubscribe(self) -> None: ...


@runtime_checkable
class Bus(Protocol):
    """A message bus. Backends: ``memory://``, ``nats://``, ``redis://`` (see ``connect``)."""

    url: str

    @property
    def max_message_bytes(self) -> int:
        """The largest message (serialized bytes) ``publish`` takes; over it, MessageTooLarge."""

    async def connect(self) -> None:
        """Open connections; raises BusError when the broker cannot be reached."""

    async def close(self) -> None:
        """Stop every subscription and close connections."""

    async def publish(self, msg: Message, subject: str | None = None) -> None:
        """Send ``msg`` to ``subject`` (default ``msg.subject``); durable subjects are stored
        before this returns and a repeat of the message id on the same subject is dropped."""

    async def publish_raw(self, subject: str, data: bytes) -> None:
        """Send bytes as they are (a gateway relaying a foreign producer); receivers validate
        them and quarantine what does not parse."""

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        """Plain subscription (wildcards allowed); with ``queue`` the group shares messages."""

    async def consume(
        self,
        subject: str,
        handler: Handler,
        *,
        group: str,
        options: DurableOptions | None = None,
    ) -> Subscription:
        """Durable consumer on a durable ``subject``; members of ``group`` share its messages."""

    async def request(self, msg: Message, *, timeout: float = 5.0) -> Message:
        """Publish ``msg`` on a plain subject and wait for the first reply; BusTimeout if none,
        ReplyTooLarge at once when the reply was over the responder's ``max_message_bytes``."""

    async def quiesce(self, timeout: float = 10.0) -> bool:
        """Wait until every message published so far has been handled (exact on memory://,
        best effort on remote brokers); True when settled within ``timeout`` seconds."""


def is_durable(subject: str) -> bool:
    """True for subjects that are kept until acknowledged (events, tasks, dead letters)."""
    return subject == "crew.events" or subject == "crew.dlq" or subject.startswith("crew.tasks.")


def check_subject(subject: str, *, pattern: bool = False) -> str:
    """Validate a subject (or, with ``pattern``, a subscription pattern); returns it.

    Raises BusError naming the bad token, or the length of a subject longer than
    ``MAX_SUBJECT_CHARS``. Tokens are ``[A-Za-z0-9_-]+``; patterns may use ``*`` for one token
    and ``>`` as the last token.
    """
    if len(subject) > MAX_SUBJECT_CHARS:
        raise BusError(
            f"bad subject {subject[:40]!r}...: {len(subject)} characters, "
            f"at most {MAX_SUBJECT_CHARS}"
        )
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if pattern and (tok == "*" or (tok == ">" and i == len(tokens) - 1)):
            continue
        if not NAME.fullmatch(tok):
            raise BusError(f"bad subject {subject!r}: token {i + 1} {tok!r}")
    return subject


def check_size(subject: str, size: int, limit: int) -> None:
    """Raise ``MessageTooLarge`` when ``size`` bytes for ``subject`` (as the caller named it,
    without a namespace) are over ``limit``; the same text on every backend."""
    if size > limit:
        raise MessageTooLarge(subject, size, limit)


REPLY_REFUSED = b"\0plantcrew.reply-refused\0"
"""Start of what a responder's bus sends instead of a reply over its ``max_message_bytes``:
followed by ``<size> <limit>`` (ASCII digits). A NUL never starts a ``Message`` (JSON)."""


def reply_bytes(reply: Message, *, subject: str, limit: int) -> bytes:
    """What a responder's bus sends back for a request on ``subject`` (as the caller named it,
    without a namespace): ``reply``'s bytes, or, when they are over ``limit`` bytes, the
    refusal (``REPLY_REFUSED``, size and limit), logged in one line (``reply refused``)."""
    data = reply.wire_bytes()
    if len(data) <= limit:
        return data
    _log.warning(
        "reply refused",
        subject=subject,
        type=reply.type,
        id=str(reply.id),
        size=len(data),
        limit=limit,
    )
    return REPLY_REFUSED + b"%d %d" % (len(data), limit)


def check_reply(subject: str, data: bytes) -> None:
    """Raise ``ReplyTooLarge`` when ``data``, the answer to a request on ``subject``, is a
    responder's refusal (see ``reply_bytes``); return for anything else (a reply to parse)."""
    if not data.startswith(REPLY_REFUSED):
        return
    size, _, limit = data[len(REPLY_REFUSED) :].partition(b" ")
    if size.isdigit() and limit.isdigit():
        raise ReplyTooLarge(subject, int(size), int(limit))


def max_message_bytes(query: dict[str, str], where: str) -> int | None:
    """The ``max_message_bytes`` of a bus URL's ``query`` (None when not given).

    Raises BusError naming ``where`` (the URL, password hidden) unless it is a whole number of
    bytes >= 1.
    """
    text = query.get("max_message_bytes")
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise BusError(f"max_message_bytes must be a number of bytes >= 1, got {text!r} in {where}")
    return value


def check_name(name: str, what: str) -> str:
    """Validate a consumer group or queue group name (``what`` says which); returns it.

    Raises BusError unless ``name`` is ``[A-Za-z0-9_-]+``.
    """
    if not NAME.fullmatch(name):
        raise BusError(f"bad {what} {name!r}: use [A-Za-z0-9_-]")
    return name


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS-style match: ``*`` matches one token, a final ``>`` one or more tokens."""
    pt, st = pattern.split("."), subject.split(".")
    for i, p in enumerate(pt):
        if p == ">":
            return len(st) > i
        if i >= len(st) or (p != "*" and p != st[i]):
            return False
    return len(pt) == len(st)


def failure_reason(exc: BaseException) -> str:
    """The dead-letter reason of a delivery whose handler raised ``exc``: ``"Type: text"``,
    or ``"Type"`` when the exception has no text."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


HANDLER_CANCELLED = "handler cancelled"
"""The dead-letter reason of a delivery whose handler was cancelled while its member went on."""


def settle_late(task: asyncio.Future[Any], *, subject: str, msg_id: str) -> None:
    """Done-callback of a handler that outlived its ack wait (its message was redelivered, so
    its outcome is void): take its outcome, so that asyncio does not report an exception
    "never retrieved" with a full traceback (it reads like a crash of the worker), and log it
    in one line (``late handler ended``, info) with the subject, message id and outcome."""
    if task.cancelled():
        outcome = HANDLER_CANCELLED
    elif (exc := task.exception()) is not None:
        outcome = failure_reason(exc)
    else:
        outcome = "returned"
    _log.info("late handler ended", subject=subject, id=msg_id, outcome=outcome)


def ack_wait_reason(ack_wait_s: float) -> str:
    """The dead-letter reason of a delivery whose handler overran ``ack_wait_s`` seconds."""
    return f"ack wait of {ack_wait_s}s expired"


def dead_letter(
    *,
    subject: str,
    reason: str,
    raw: bytes | str,
    attempts: int,
    quarantined: bool,
    original: Message | None = None,
    source: str = "bus",
    **fields: Any,
) -> Message:
    """Build the ``DeadLetter`` message for ``crew.dlq`` (the caller publishes it);
    ``fields`` are envelope attributes (e.g. ``run_id``, ``time``)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    payload = DeadLetter(
        original_subject=subject,
        original_id=str(original.id) if original else None,
        reason=reason[:4000],
        attempts=attempts,
        quarantined=quarantined,
        raw=text[:65536],
    )
    if original is not None:
        return original.reply(payload, source=source, subject=Subjects.DLQ, **fields)
    return Message.new(payload, source=source, subject=Subjects.DLQ, **fields)


class QuarantineOnce:
    """Tells the copies one publish of a malformed plain message delivers to several
    subscriptions of a bus apart from another publish of the same bytes, so the bus
    quarantines each publish once (see the module doc).

    Plain subjects carry no message id, so a copy is recognised by subject and bytes (a
    digest) and by who received it: a *receiver* is a subscription, or a queue group (its
    members share one copy). A receiver that gets every publish (no queue group) and gets the
    bytes again has a new publish; one that has not got them yet has the copy of the last
    one. A queue group, which may have had its copy delivered in another process, is taken
    for a copy only when a subscription without a queue group also received the bytes (that
    one will see a new publish too). Identical malformed messages whose copies interleave may
    be quarantined more than once (never less). Entries last ``window_s`` seconds, at most
    ``limit`` of them.
    """

    def __init__(self, window_s: float = 10.0, limit: int = 10_000) -> None:
        self.window_s, self.limit = window_s, limit
        # (subject, digest) -> (expiry, receivers that got it, one of them gets every publish)
        self._seen: OrderedDict[tuple[str, bytes], tuple[float, set[object], bool]] = OrderedDict()

    def first(self, subject: str, data: bytes, receiver: object, *, every: bool) -> bool:
        """True when ``receiver`` (``every``: it gets every publish on ``subject``) got a new
        publish of the malformed ``data`` (quarantine it), False for a copy of one already
        quarantined by this bus."""
        key = (subject, hashlib.blake2b(data, digest_size=16).digest())
        now = time.monotonic()
        hit = self._seen.get(key)
        if hit is not None and hit[0] > now and receiver not in hit[1] and (every or hit[2]):
            hit[1].add(receiver)
            self._seen[key] = (hit[0], hit[1], hit[2] or every)
            return False
        self._seen[key] = (now + self.window_s, {receiver}, every)
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True


def parse_or_reason(data: bytes) -> tuple[Message | None, str | None]:
    """Parse received bytes: ``(message, None)`` or ``(None, reason naming the bad fields)``."""
    try:
        return Message.from_bytes(data), None
    except MessageValidationError as exc:
        return None, str(exc)
