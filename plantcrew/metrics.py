"""Prometheus metrics of plantcrew itself (observability, never telemetry), importable from
every layer: this module depends only on ``prometheus_client``.

Every process (the API service, each worker, ``plantcrew run``) keeps these in its own default
registry and serves them on ``/metrics``. The counts that live in the database (incidents by
status, time to detect and resolve, approvals pending, model calls, tokens, cost, fallbacks,
recorded dead letters) are not kept here: the API service computes them from the store at
scrape time (``plantcrew.api.store_metrics``), so they are exposed once and survive restarts.

Names follow Prometheus conventions (https://prometheus.io/docs/practices/naming/): base units
(seconds, USD), ``_total`` on counters. Labels stay low in cardinality: subjects are folded to
their kind by :func:`subject_label` (``telemetry.pump1`` → ``telemetry``), never an id.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from plantcrew.tally import MessageTally

NAMESPACE = "plantcrew"
# handler latency: 1 ms .. 60 s (model calls sit in the seconds)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REDELIVERIES = Counter(
    "redeliveries_total",
    "Durable messages scheduled for another delivery (handler failed or ack wait expired).",
    ["subject"],
    namespace=NAMESPACE,
)
DEAD_LETTERS = Counter(
    "dead_letters_total",
    "Messages sent to crew.dlq by this process: quarantined (failed validation) or "
    "dead-lettered (handler failed max_deliver times).",
    ["subject", "quarantined"],
    namespace=NAMESPACE,
)
MODEL_CALLS = Counter(
    "process_model_calls_total",
    "Model calls made by this process, by model group, deployment and outcome.",
    ["model_group", "deployment", "outcome"],
    namespace=NAMESPACE,
)
HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests served, by method, route template and status code.",
    ["method", "route", "status"],
    namespace=NAMESPACE,
)
HTTP_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Wall seconds to the response's first byte (a stream counts until its headers).",
    ["method", "route"],
    namespace=NAMESPACE,
    buckets=HTTP_BUCKETS,
)
RATE_LIMITED = Counter(
    "rate_limited_total",
    "Requests refused with 429 by the per-token rate limit.",
    ["token"],
    namespace=NAMESPACE,
)
TELEMETRY_INGESTED = Counter(
    "telemetry_batches_ingested_total",
    "Telemetry batches taken in over the API: accepted (published) or rejected "
    "(invalid, dead-lettered with the reason).",
    ["outcome"],
    namespace=NAMESPACE,
)
SSE_CLIENTS = Gauge(
    "sse_clients",
    "Server-sent-event streams open now.",
    namespace=NAMESPACE,
)
AGENTS_LIVE = Gauge(
    "agents_live",
    "Agents whose heartbeat this process heard within their time to live, by role.",
    ["role"],
    namespace=NAMESPACE,
)
READY = Gauge(
    "ready",
    "1 when the named dependency answered the last readiness check, else 0.",
    ["check"],
    namespace=NAMESPACE,
)


def subject_label(subject: str) -> str:
    """Fold a subject to a low-cardinality label: ``telemetry.*`` → ``telemetry``,
    ``_inbox.*`` → ``inbox``, ``_health.*`` → ``health``; crew subjects (a fixed set) are
    kept whole, anything else becomes ``other``."""
    if subject.startswith("telemetry."):
        return "telemetry"
    if subject.startswith("crew."):
        return subject
    if subject.startswith("_inbox."):
        return "inbox"
    if subject.startswith("_health."):
        return "health"
    return "other"


# Every publish and delivery on the bus is counted: kept in plain per-thread tallies (see
# plantcrew.tally, about ten times cheaper than prometheus_client's objects), exported as
# plantcrew_messages_published_total{subject,type},
# plantcrew_messages_handled_total{subject,type,outcome} (ok: the handler returned; error: it
# raised, so a durable message is redelivered) and
# plantcrew_handler_duration_seconds{subject,type} (LATENCY_BUCKETS).
MESSAGES = MessageTally(
    f"{NAMESPACE}_",
    buckets=LATENCY_BUCKETS,
    label_of=subject_label,
    help_published="Messages published on the bus, by subject kind and message type.",
    help_handled="Deliveries handled by a subscriber, by subject kind, message type and outcome "
    "(ok: the handler returned; error: it raised, so a durable message is redelivered).",
    help_seconds="Wall seconds a subscriber's handler took for one delivery.",
)
REGISTRY.register(MESSAGES)

published = MESSAGES.published
"""Count one publish on ``subject`` of a message of ``msg_type``: ``published(subject, type)``."""
handled = MESSAGES.handled
"""Count one handled delivery and its handler's wall seconds:
``handled(subject, type, ok, seconds)``."""


def redelivered(subject: str) -> None:
    """Count one redelivery scheduled on ``subject``."""
    REDELIVERIES.labels(subject_label(subject)).inc()


def dead_lettered(subject: str, *, quarantined: bool) -> None:
    """Count one message sent to the dead-letter subject from ``subject``."""
    DEAD_LETTERS.labels(subject_label(subject), "true" if quarantined else "false").inc()


def model_call(model_group: str, deployment: str, *, ok: bool, fallback: bool) -> None:
    """Count one model call of this process (outcome ``ok``, ``fallback`` or ``error``)."""
    outcome = "error" if not ok else ("fallback" if fallback else "ok")
    MODEL_CALLS.labels(model_group, deployment, outcome).inc()


__all__ = [
    "AGENTS_LIVE",
    "DEAD_LETTERS",
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "MESSAGES",
    "MODEL_CALLS",
    "RATE_LIMITED",
    "READY",
    "REDELIVERIES",
    "SSE_CLIENTS",
    "TELEMETRY_INGESTED",
    "dead_lettered",
    "handled",
    "model_call",
    "published",
    "redelivered",
    "subject_label",
]
