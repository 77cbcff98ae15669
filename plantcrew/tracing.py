"""Tracing across processes (OpenTelemetry) and the context every handler runs in.

The trace context travels in the ``Message`` envelope's ``traceparent`` (W3C Trace Context,
https://www.w3.org/TR/trace-context/): :func:`stamp` puts the current span's context on a
message that has none when it is published; :func:`instrument_handler` wraps a bus subscriber
so that each delivery runs in a span whose parent is the message's ``traceparent``, with the
message being handled kept in a context variable (every log line of the handler carries its
run, incident, message and trace ids: :func:`add_handling_ids`, a structlog processor, adds
them when a line is written), and with its latency and outcome counted in
``plantcrew.metrics``.

This is the bus's hot path (every publish and every delivery): nothing here is computed per
message that is not needed per message. The ids of a log line are worked out only when a
line is logged, and a span is started only when tracing is on (an SDK provider is installed);
with tracing off, a handler's new messages still inherit the handled message's
``traceparent``, as they would under the no-op API's non-recording span.

Spans are exported over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set (:func:`configure_tracing`); otherwise the
OpenTelemetry API stays a no-op: no span is recorded and nothing touches the network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from plantcrew import metrics
from plantcrew.messages import Message

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "plantcrew"
_configured: dict[str, Any] = {}
_HANDLING: ContextVar[Message | None] = ContextVar("plantcrew_handling", default=None)
_perf_counter = time.perf_counter


def _current_context_getter() -> Callable[[], otel_context.Context]:
    """``otel_context.get_current`` without its two Python frames (it runs per publish): the
    ``get`` of the ContextVar behind the API's default runtime context, when that is the one
    loaded; else the API function itself."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(var, ContextVar):
        return var.get
    return otel_context.get_current


_get_current = _current_context_getter()
_published = metrics.published
_UNKNOWN = object()
_NO_OP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ

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


def tracing_on() -> bool:
    """True when spans are recorded: :func:`configure_tracing` installed a provider, or some
    other code set a global OpenTelemetry SDK provider. False: the API is a no-op.

    Cheap (it runs per delivery): it reads the API's global provider, set at most once,
    instead of ``trace.get_tracer_provider()``, which looks up the environment every call.
    """
    if _configured.get("provider") is not None:
        return True
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        if not _PROVIDER_FROM_ENV:
            return False
        provider = trace.get_tracer_provider()  # loads the one the environment names
    elif provider is _UNKNOWN:  # an API version without that global
        provider = trace.get_tracer_provider()
    return not isinstance(provider, _NO_OP_PROVIDERS)


def handled_message() -> Message | None:
    """The message whose handler is running in this context (None outside a handler)."""
    return _HANDLING.get()


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None when no span is recording."""
    ctx = otel_context.get_current()
    if not ctx:  # nothing attached (the usual case with tracing off): no span to look up
        return None
    span = trace.get_current_span(ctx)
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
    """Count the publish, and give ``msg`` the current trace context if it has none.

    The current trace context is the current span's or, with no span current (tracing off),
    the ``traceparent`` of the message being handled. Returns ``msg`` itself when it carries a
    ``traceparent`` already or there is no trace context; otherwise a copy with the same id
    and ``traceparent`` set (the envelope is frozen).
    """
    _published(subject or msg.subject, msg.type)
    if msg.traceparent is not None:
        return msg
    # read the current span only when a context is attached: with none (tracing off, no
    # span entered) there is none to read, and the check is cheaper than the read
    tp = current_traceparent() if _get_current() else None
    if tp is None:
        handled = _HANDLING.get()
        tp = handled.traceparent if handled is not None else None
    return msg if tp is None else msg.model_copy(update={"traceparent": tp})


def log_ids(msg: Message) -> dict[str, str]:
    """The ids a log line about ``msg`` carries: run_id, incident_id, message_id, trace_id."""
    ids = {"message_id": str(msg.id), "message_type": msg.type}
    if msg.run_id:
        ids["run_id"] = msg.run_id
    incident = vars(msg.payload).get("incident_id")  # getattr raises inside pydantic: slow
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


def add_handling_ids(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add :func:`log_ids` of the message being handled (if any) to a log
    line, without replacing keys the line or the bound context already has.
    ``plantcrew.logs.configure`` installs it."""
    msg = _HANDLING.get()
    if msg is not None:
        for key, value in log_ids(msg).items():
            event_dict.setdefault(key, value)
    return event_dict


def _span(msg: Message, subject: str, name: str | None, group: str | None = None) -> Any:
    """A consumer span for handling ``msg`` (a context manager), or None when there is none to
    record: tracing off, or untraced telemetry (high rate: no ``traceparent``). The span is
    ``name``, else ``"<group> <type>"``, else ``"handle <type>"``."""
    if msg.traceparent is None and subject.startswith("telemetry."):
        return None
    if not tracing_on():
        return None
    return tracer().start_as_current_span(
        name or f"{group or 'handle'} {msg.type}",
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


@contextmanager
def handling(msg: Message, subject: str, name: str | None = None) -> Iterator[None]:
    """Run a block as the handling of ``msg``: a consumer span (parent: its ``traceparent``;
    none for untraced telemetry, which is high rate, nor when tracing is off), ``msg`` as the
    message being handled (its ids on every log line), and the latency and outcome in
    ``plantcrew.metrics``. Exceptions propagate (counted as errors)."""
    span_cm = _span(msg, subject, name)
    token = _HANDLING.set(msg)
    t0 = _perf_counter()
    ok = False
    try:
        if span_cm is None:
            yield
        else:
            with span_cm:
                yield
        ok = True
    finally:
        metrics.handled(subject, msg.type, ok, _perf_counter() - t0)
        _HANDLING.reset(token)


def instrument_handler(handler: Handler, *, subject: str, group: str | None = None) -> Handler:
    """Wrap a bus subscriber so that each delivery runs as in :func:`handling` (inlined here:
    this runs once per delivery).

    ``subject`` is the subscription's subject or pattern (the label uses the delivered
    message's own subject); ``group`` (the consumer or queue group) names the span. Idempotent:
    a handler wrapped once is returned as it is.
    """
    if getattr(handler, "__plantcrew_instrumented__", False):
        return handler
    owner = getattr(handler, "__self__", None)
    group = group or "subscriber"
    handled = metrics.handled

    # ``self`` (the bound handler's owner, e.g. an Agent) is a parameter so that it is in the
    # frame of a not-yet-started coroutine, where frame-inspecting task factories look for it
    # (``plantcrew.replay.caller``). Callers pass only ``msg``.
    async def wrapped(msg: Message, self: Any = owner) -> Message | None:
        where = msg.subject or subject
        if msg.traceparent is None and where.startswith("telemetry."):
            span_cm = None  # untraced telemetry (the high-rate case): never a span
        else:
            span_cm = _span(msg, where, None, group)
        token = _HANDLING.set(msg)
        t0 = _perf_counter()
        try:
            if span_cm is None:
                reply = await handler(msg)
            else:
                with span_cm:
                    reply = await handler(msg)
        except BaseException:
            handled(where, msg.type, False, _perf_counter() - t0)
            raise
        finally:
            _HANDLING.reset(token)
        handled(where, msg.type, True, _perf_counter() - t0)
        return reply

    wrapped.__plantcrew_instrumented__ = True  # type: ignore[attr-defined]
    wrapped.__wrapped__ = handler  # type: ignore[attr-defined]
    return wrapped


__all__ = [
    "add_handling_ids",
    "configure_tracing",
    "context_of",
    "current_traceparent",
    "handled_message",
    "handling",
    "instrument_handler",
    "log_ids",
    "stamp",
    "trace_id_of",
    "tracer",
    "tracing_on",
]
