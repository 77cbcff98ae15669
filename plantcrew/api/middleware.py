"""The outermost layer of every request: request id, trace span, access log and metrics.

A pure ASGI middleware (it does not buffer bodies, so event streams flow through it):

- ``X-Request-ID``: taken from the request when it is a sane token (1-128 of
  ``[A-Za-z0-9._-]``), otherwise a new time-ordered UUID; sent back on every response and
  bound into structlog's context, so every log line of the request carries ``request_id``.
- ``RateLimit-Limit`` and ``RateLimit-Remaining`` on every answer to an authenticated token
  (its bucket size and what is left in it; see ``plantcrew.api.auth``).
- a server span whose parent is the request's ``traceparent`` header (W3C), when tracing is on;
  its ``trace_id`` is logged.
- one ``request`` log line per request (method, path, route, status, milliseconds, token id).
- ``plantcrew_http_requests_total`` and ``plantcrew_http_request_duration_seconds``.
- an unhandled error becomes a 500 problem answer carrying the request id (logged with its
  traceback), never a bare connection reset.
- a request the server cuts when it stops (still running when its grace period is over, see
  ``plantcrew serve --grace``) is logged in one line and, when nothing was answered yet,
  gets a 503 problem saying so (retry it; a POST with its ``Idempotency-Key`` is safe to retry).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uuid6 import uuid7

from plantcrew import metrics, tracing

log = structlog.get_logger("plantcrew.api")
HEADER = "x-request-id"
_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
QUIET_PATHS = ("/healthz", "/readyz", "/startupz", "/metrics")


def request_id_of(scope: Scope) -> str:
    """The request's id: its own ``X-Request-ID`` when sane, else a new UUIDv7 (hex)."""
    for name, value in scope.get("headers", []):
        if name == HEADER.encode():
            text = value.decode("latin-1").strip()
            if _ID.match(text):
                return text
    return uuid7().hex


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return str(v.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """See module doc. Wrap the whole app: ``RequestContextMiddleware(app)``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = rid
        method, path = scope["method"], scope["path"]
        t0 = time.perf_counter()
        status: dict[str, Any] = {"code": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                headers = list(message.get("headers", []))
                headers.append((HEADER.encode(), rid.encode()))
                rate = scope["state"].get("rate_limit")
                if rate is not None:  # set when a token was charged (plantcrew.api.auth)
                    headers.append((b"ratelimit-limit", str(rate[0]).encode()))
                    headers.append((b"ratelimit-remaining", str(rate[1]).encode()))
                message = {**message, "headers": headers}
                route = _route_of(scope)
                metrics.HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - t0)
            await send(message)

        parent = tracing.context_of(_header(scope, b"traceparent"))
        with tracing.tracer().start_as_current_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:
            ids: dict[str, str] = {"request_id": rid}
            sc = span.get_span_context()
            if sc.is_valid:
                ids["trace_id"] = format(sc.trace_id, "032x")
            with structlog.contextvars.bound_contextvars(**ids):
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception:
                    log.exception("unhandled error", method=method, path=path)
                    if not status["started"]:
                        await _send_problem(send_with_id, rid, 500, FAILED)
                    status["code"] = 500
                except asyncio.CancelledError:
                    # only the server cancels a request, when it stops and the grace is over:
                    # the request ends here, answered if it can be (no traceback from uvicorn)
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    log.warning("request cut: the service stopped", method=method, path=path)
                    if not status["started"]:
                        await _send_problem(send_with_id, rid, 503, STOPPED)
                    status["code"] = 503
                finally:
                    route = _route_of(scope)
                    code = int(status["code"])
                    span.set_attribute("http.response.status_code", code)
                    if sc.is_valid:
                        span.update_name(f"{method} {route}")
                    metrics.HTTP_REQUESTS.labels(method, route, str(code)).inc()
                    principal = scope["state"].get("principal")
                    fields: dict[str, Any] = {
                        "method": method,
                        "path": path,
                        "route": route,
                        "status": code,
                        "ms": round(1000 * (time.perf_counter() - t0), 2),
                    }
                    if principal is not None:
                        fields["token_id"] = principal.token_id
                    if path in QUIET_PATHS and code < 400:
                        log.debug("request", **fields)
                    else:
                        log.info("request", **fields)
                    structlog.contextvars.unbind_contextvars("token_id")


def _route_of(scope: Scope) -> str:
    """The matched route's template (``/api/v1/incidents/{incident_id}``), never raw ids."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        if scope.get("path", "").startswith("/api/v1/") and not path.startswith("/api/v1"):
            return "/api/v1" + path
        return path
    return "static" if scope.get("path", "").startswith("/console") else "unmatched"


FAILED = ("Internal server error", "the service failed on this request; its log has the details")
STOPPED = (
    "Service unavailable",
    "the service stopped before this request finished; retry it (a POST with its "
    "Idempotency-Key is safe to retry)",
)


async def _send_problem(send: Send, rid: str, status: int, what: tuple[str, str]) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": what[0],
            "status": status,
            "detail": what[1],
            "request_id": rid,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["HEADER", "RequestContextMiddleware", "request_id_of", "trace"]
