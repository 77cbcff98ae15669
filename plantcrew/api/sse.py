"""Incident news as server-sent events, read from the conversation log.

The stream follows the ``message`` table (every message the Coordinator received or sent,
with a monotonic ``seq``), so it works whatever the bus and however many processes run the
crew, and a client that reconnects with ``Last-Event-ID: <seq>`` (the EventSource standard,
https://html.spec.whatwg.org/multipage/server-sent-events.html) misses nothing.

On PostgreSQL a sequence value can commit after a larger one; so each poll looks back
``LOOKBACK`` sequence numbers behind the last one sent and skips what it sent already.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from sqlmodel import col, func, select
from starlette.concurrency import run_in_threadpool

from plantcrew import metrics
from plantcrew.api.redact import redact
from plantcrew.errors import StoreUnavailable
from plantcrew.store import MessageRecord, Store

log = structlog.get_logger("plantcrew.api")

STREAM_TYPES = (
    "anomaly.detected",
    "incident.updated",
    "approval.requested",
    "approval.decided",
    "action.executed",
    "review.completed",
)
LOOKBACK = 200
BATCH = 500


def event_of(rec: MessageRecord) -> dict[str, Any]:
    """The JSON of one stream event (payload redacted)."""
    body = json.loads(rec.body)
    incident = body.get("payload", {}).get("incident_id")
    if incident is None and rec.correlation_id and rec.correlation_id != rec.run_id:
        incident = rec.correlation_id
    return {
        "seq": rec.seq,
        "id": rec.id,
        "type": rec.type,
        "run_id": rec.run_id,
        "incident_id": incident,
        "source": rec.source,
        "time": rec.time.isoformat(),
        "plant_time": rec.plant_time,
        "payload": redact(body.get("payload", {})),
    }


def fetch(store: Store, after: int, run_id: str | None = None) -> list[MessageRecord]:
    """Stream-worthy messages with ``seq > after`` (at most BATCH), oldest first."""
    with store.tx() as s:
        q = select(MessageRecord).where(
            col(MessageRecord.seq) > after, col(MessageRecord.type).in_(STREAM_TYPES)
        )
        if run_id is not None:
            q = q.where(col(MessageRecord.run_id) == run_id)
        return list(s.exec(q.order_by(col(MessageRecord.seq)).limit(BATCH)))


def last_seq(store: Store) -> int:
    """The newest ``seq`` of the conversation log (0 when empty)."""
    with store.tx() as s:
        return int(s.exec(select(func.max(MessageRecord.seq))).one() or 0)


def frame(event: dict[str, Any]) -> str:
    """One SSE frame: ``id``, ``event`` and a one-line JSON ``data``."""
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def events(
    store: Store,
    *,
    after: int | None,
    run_id: str | None,
    poll_s: float,
    keepalive_s: float,
    disconnected: Callable[[], Any],
    limit: int | None = None,
    max_s: float | None = None,
    revoked: Callable[[], Awaitable[str | None]] | None = None,
    recheck_s: float = 30.0,
    retry_after_s: int = 5,
    stopping: asyncio.Event | None = None,
) -> AsyncIterator[str]:
    """SSE frames from ``after`` (None: only what happens from now on) until the client goes.

    ``limit`` ends the stream after that many events, ``max_s`` after that many seconds (for
    clients that want a bounded read).
    A comment line is sent after ``keepalive_s`` of silence so proxies keep the stream open.
    Every ``recheck_s`` the stream asks ``revoked`` (why the caller's token is no longer
    valid, or None) and ends with that reason as a comment when it is not: the reconnect then
    gets a 401.
    When the database cannot serve (:class:`~plantcrew.errors.StoreUnavailable`) the stream
    logs one line (no traceback) and ends with a comment naming the cause, after a ``retry``
    field of ``retry_after_s`` (EventSource's reconnection delay): the reconnect then gets
    the service's 503 with ``Retry-After`` until the database is back.
    When ``stopping`` is set (the service stops) the stream ends at once with the comment
    ``stream ended: server stopping``, a complete body: EventSource reconnects after its
    ``retry`` delay with its ``Last-Event-ID`` (to another replica, or this one restarted).
    """
    metrics.SSE_CLIENTS.inc()
    try:
        cursor = after if after is not None else await run_in_threadpool(last_seq, store)
        floor = cursor  # the client has (or did not want) everything up to here
        sent_recent: deque[int] = deque(maxlen=4 * LOOKBACK)
        sent_set: set[int] = set()
        # the opening names the cursor as the event id: a client that loses the line before
        # any event reconnects with it (EventSource keeps an id even without data) and
        # misses nothing, instead of starting again from a later "now"
        yield f"retry: 2000\nid: {cursor}\n: stream from seq {cursor}\n\n"
        quiet = 0.0
        count = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + max_s if max_s is not None else None
        recheck = loop.time() + recheck_s
        while True:
            if await disconnected() or (end is not None and loop.time() >= end):
                return
            if stopping is not None and stopping.is_set():
                yield ": stream ended: server stopping\n\n"
                return
            if revoked is not None and loop.time() >= recheck:
                recheck = loop.time() + recheck_s
                why = await revoked()
                if why is not None:
                    yield f": stream ended: {' '.join(why.split())}\n\n"
                    return
            rows = await run_in_threadpool(fetch, store, max(0, cursor - LOOKBACK), run_id)
            fresh = [
                r for r in rows if r.seq is not None and r.seq > floor and r.seq not in sent_set
            ]
            for rec in fresh:
                assert rec.seq is not None
                yield frame(event_of(rec))
                if len(sent_recent) == sent_recent.maxlen:
                    sent_set.discard(sent_recent[0])
                sent_recent.append(rec.seq)
                sent_set.add(rec.seq)
                cursor = max(cursor, rec.seq)
                count += 1
                if limit is not None and count >= limit:
                    return
            if fresh:
                quiet = 0.0
                if len(rows) >= BATCH:
                    continue  # more waiting: no pause
            else:
                quiet += poll_s
                if quiet >= keepalive_s:
                    quiet = 0.0
                    yield ": keepalive\n\n"
            await _pause(poll_s, stopping)
    except StoreUnavailable as exc:
        log.warning(
            "event stream ended: database cannot serve", cause=exc.cause, error=str(exc)[:500]
        )
        yield (
            f"retry: {retry_after_s * 1000}\n"
            f": stream ended: database {exc.cause}; retry after {retry_after_s} s\n\n"
        )
    finally:
        metrics.SSE_CLIENTS.dec()


async def _pause(seconds: float, stopping: asyncio.Event | None) -> None:
    """Sleep ``seconds``, or less when ``stopping`` is set meanwhile."""
    if stopping is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
