"""Idempotency keys on POSTs (after the IETF httpapi ``Idempotency-Key`` header draft).

A client that may retry sends ``Idempotency-Key: <unique string>``. The first request with a
key runs and its successful answer is kept (per token, for ``idempotency_ttl_s``); a retry
with the same key and the same request gets that answer again, marked
``Idempotent-Replayed: true``, and nothing is done twice. The same key with a different
request is refused with 422; while the first is still running, 409. A request that failed
(4xx/5xx) releases its key, so it may be retried.

A key older than the TTL is forgotten: a new request with it runs. Expired keys are deleted
while the service runs, not only at start-up: at most every ``idempotency_purge_s`` a keyed
POST, after its answer is sent, deletes up to :data:`PURGE_BATCH` of them, oldest first (again
at the next keyed POST while a full batch was deleted), so the table stays bounded by the
keys of one TTL and no request pays for an unbounded delete.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from plantcrew.api.auth import Principal, context
from plantcrew.api.context import ApiContext
from plantcrew.api.problems import ApiError
from plantcrew.errors import PlantcrewError

HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[!-~]{1,255}$"  # 1-255 visible ASCII characters, as the draft recommends
_KEY = re.compile(KEY_PATTERN)
PURGE_BATCH = 1000  # expired keys one purge deletes at most
log = structlog.get_logger("plantcrew.api")


async def fingerprint(request: Request) -> str:
    """SHA-256 of the method, path, query and body: what makes two requests "the same"."""
    body = await request.body()
    h = hashlib.sha256()
    for part in (request.method, request.url.path, request.url.query):
        h.update(part.encode())
        h.update(b"\0")
    h.update(body)
    return h.hexdigest()


async def idempotent(
    request: Request,
    principal: Principal,
    key: str | None,
    produce: Callable[[], Awaitable[tuple[int, Any]]],
) -> JSONResponse:
    """Run ``produce`` (returning status and a JSON-able body) at most once per key.

    Without a key it simply runs. Raises ApiError 400 for a malformed key, 409 while the
    first request with the key runs, 422 when the key was used for a different request.
    """
    if key is None:
        status, body = await produce()
        return JSONResponse(jsonable_encoder(body), status_code=status)
    if not _KEY.match(key):
        raise ApiError(400, "Bad request", f"{HEADER} must be 1-255 visible ASCII characters")
    ctx = context(request)
    access = ctx.access
    ttl = timedelta(seconds=ctx.settings.idempotency_ttl_s)
    fp = await fingerprint(request)
    earlier = await run_in_threadpool(
        lambda: access.begin_request(principal.token_id, key, fp, ttl=ttl)
    )
    if earlier is not None:
        if earlier.fingerprint != fp:
            raise ApiError(
                422,
                "Unprocessable content",
                f"{HEADER} {key!r} was used for a different request",
            )
        if earlier.status != "done" or earlier.response_status is None:
            raise ApiError(409, "Conflict", f"a request with {HEADER} {key!r} is still running")
        return JSONResponse(
            json.loads(earlier.response_body),
            status_code=earlier.response_status,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        status, body = await produce()
    except BaseException:
        await run_in_threadpool(access.release_request, principal.token_id, key)
        raise
    encoded = jsonable_encoder(body)
    await run_in_threadpool(
        access.finish_request, principal.token_id, key, status, json.dumps(encoded)
    )
    return JSONResponse(encoded, status_code=status, background=purge_task(ctx))


def purge_task(ctx: ApiContext) -> BackgroundTask | None:
    """A purge of expired keys to run after a response, when one is due (else None)."""
    now = time.monotonic()
    if now < ctx.keys_purge_due:
        return None
    ctx.keys_purge_due = now + ctx.settings.idempotency_purge_s
    return BackgroundTask(_purge, ctx)


async def _purge(ctx: ApiContext) -> None:
    ttl = timedelta(seconds=ctx.settings.idempotency_ttl_s)
    try:
        n = await run_in_threadpool(lambda: ctx.access.purge_requests(ttl, limit=PURGE_BATCH))
    except PlantcrewError as exc:
        log.warning("expired idempotency keys not purged", error=str(exc))
        return
    if n >= PURGE_BATCH:
        ctx.keys_purge_due = 0.0  # more may wait: the next keyed POST purges again
