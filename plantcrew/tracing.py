"""Tracing across processes (OpenTelemetry) and the context every handler runs in.

The trace context travels in the ``Message`` envelope's ``traceparent`` (W3C Trace Context,
https://www.w3.org/TR/trace-context/): :func:`stamp` puts the current span's context on a
message that has none when it is published; :func:`instrument_handler` wraps a bus subscriber
so that each delivery runs in a span whose parent is the message's ``traceparent``, with the
run, incident, message and trace ids bound into structlog's context (every log line of the
handler carries them), and with its latency and outcome counted in ``plantcrew.metrics``.

Spans are exported over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set (:func:`configure_tracing`); otherwise the
OpenTelemetry API stays a no-op: no span is recorded and nothing touches the network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from plantcrew import metrics
from plantcrew.messages import Message

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "plantcrew"
_configured: dict[str, Any] = {}

Handler = Callable[[Message], Awaitable[Message | None]]


def configure_tracing(service_name: str, *, exporter: Any | None = None) -> bool:
    """Install an SDK tracer provider for ``service_name`` when tracing is wanted.

    Wanted means: an ``exporter`` is given (tests pass an in-memory one; spans are exported
    synchronously), or ``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
    is set (OTLP over HTTP, batched). Returns True when a provider was installed by this call
    or an earlier one; False when tracing stays off. Sampling follows ``OTEL_TRACES_SAMPLER``
    (the SDK's default: parent-based, always on).
    """
    if _configured.get("provider") is not None:
        return True
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter is None and not endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
        )
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured["provider"] = provider
    return True


def tracer() -> trace.Tracer:
    """plantcrew's tracer (a no-op one until :func:`configure_tracing` installed a provider)."""
    provider = _configured.get("provider")
    if provider is not None:
        return provider.get_tracer(_TRACER_NAME)
    return trace.get_tracer(_TRACER_NAME)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None when no span is recording."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The OpenTelemetry context a ``traceparent`` names (None when absent or malformed)."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({"traceparent": traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id inside a ``traceparent`` (``00-<trace>-<span>-<flags>``)."""
    if not traceparent or traceparent.count("-") != 3:
        return None
    return traceparent.split("-")[1]


def stamp(msg: Message, subject: str | None = None) -> Message:
    """Count the publish, and give ``msg`` the current span's trace context if it has none.

    Returns ``msg`` itself when it carries a ``traceparent`` already or no span is recording;
    otherwise a copy with the same id and ``traceparent`` set (the envelope is frozen).
    """
    metrics.published(subject or msg.subject, msg.type)
    if msg.traceparent is not None:
        return msg
    tp = current_traceparent()
    return msg if tp is None else msg.model_copy(update={"traceparent": tp})


def log_ids(msg: Message) -> dict[str, str]:
    """The ids a log line about ``msg`` carries: run_id, incident_id, message_id, trace_id."""
    ids = {"message_id": str(msg.id), "message_type": msg.type}
    if msg.run_id:
        ids["run_id"] = msg.run_id
    incident = getattr(msg.payload, "incident_id", None)
    if incident is None and msg.correlation_id and msg.correlation_id != msg.run_id:
        incident = msg.correlation_id
    if incident:
        ids["incident_id"] = str(incident)
    trace_id = trace_id_of(msg.traceparent)
    if trace_id is None:
        ctx = trace.get_current_span().get_span_context()
        trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
    if trace_id:
        ids["trace_id"] = trace_id
    return ids


@contextmanager
def handling(msg: Message, subject: str, name: str | None = None) -> Iterator[None]:
    """Run a block as the handling of ``msg``: a consumer span (parent: its ``traceparent``;
    none for untraced telemetry, which is high rate), structlog context with its ids, and the
    latency and outcome in ``plantcrew.metrics``. Exceptions propagate (counted as errors)."""
    traced = msg.traceparent is not None or not subject.startswith("telemetry.")
    t0 = time.perf_counter()
    ok = False
    span_cm: Any = (
        tracer().start_as_current_span(
            name or f"handle {msg.type}",
            context=context_of(msg.traceparent),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.destination.name": subject,
                "messaging.message.id": str(msg.id),
                "plantcrew.message.type": msg.type,
            },
            record_exception=True,
            set_status_on_exception=True,
        )
        if traced
        else _null()
    )
    with span_cm, structlog.contextvars.bound_contextvars(**log_ids(msg)):
        try:
            yield
            ok = True
        finally:
            metrics.handled(subject, msg.type, ok, time.perf_counter() - t0)


@contextmanager
def _null() -> Iterator[None]:
    yield


def instrument_handler(handler: Handler, *, subject: str, group: str | None = None) -> Handler:
    """Wrap a bus subscriber so that each delivery runs inside :func:`handling`.

    ``subject`` is the subscription's subject or pattern (the label uses the delivered
    message's own subject); ``group`` (the consumer or queue group) names the span. Idempotent:
    a handler wrapped once is returned as it is.
    """
    if getattr(handler, "__plantcrew_instrumented__", False):
        return handler
    owner = getattr(handler, "__self__", None)

    # ``self`` (the bound handler's owner, e.g. an Agent) is a parameter so that it is in the
    # frame of a not-yet-started coroutine, where frame-inspecting task factories look for it
    # (``plantcrew.replay.caller``). Callers pass only ``msg``.
    async def wrapped(msg: Message, self: Any = owner) -> Message | None:
        name = f"{group or 'subscriber'} {msg.type}"
        with handling(msg, msg.subject or subject, name):
            return await handler(msg)

    wrapped.__plantcrew_instrumented__ = True  # type: ignore[attr-defined]
    wrapped.__wrapped__ = handler  # type: ignore[attr-defined]
    return wrapped


__all__ = [
    "configure_tracing",
    "context_of",
    "current_traceparent",
    "handling",
    "instrument_handler",
    "log_ids",
    "stamp",
    "trace_id_of",
    "tracer",
]
