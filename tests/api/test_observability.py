"""Observability: JSON logs with the ids, traces carried in the envelope, metrics that move,
and the probes of a worker process."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from plantcrew import tracing
from plantcrew.api.health import BusProbe
from plantcrew.api.worker_probes import WorkerProbes
from plantcrew.bus import connect
from plantcrew.logs import configure
from plantcrew.messages import AnomalyCleared, Message, Subjects
from tests.api.conftest import SCENARIO, Api

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """plantcrew's JSON logging, written to a buffer the test reads."""
    saved = structlog.get_config()
    configure("DEBUG", json=True)
    out = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    try:
        yield out
    finally:
        structlog.configure(**saved)
        structlog.contextvars.clear_contextvars()


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """A tracer provider of this test only (the process-wide one is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setitem(tracing._configured, "provider", provider)
    return exporter


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_request_logs_are_json_with_the_request_id(api: Api, json_logs: io.StringIO) -> None:
    r = api.client.get("/api/v1/incidents", headers=api.h("viewer", **{"X-Request-ID": "req-42"}))
    assert r.headers["x-request-id"] == "req-42"
    odd = api.client.get("/api/v1/me", headers=api.h("viewer", **{"X-Request-ID": "no way!"}))
    assert odd.headers["x-request-id"] != "no way!" and len(odd.headers["x-request-id"]) == 32
    lines = _lines(json_logs.getvalue())  # every line must parse as JSON
    [req] = [x for x in lines if x.get("event") == "request" and x.get("request_id") == "req-42"]
    assert req["status"] == 200 and req["route"] == "/api/v1/incidents"
    assert req["token_id"] == api.tokens["viewer"].split("_")[1]
    assert req["level"] == "info" and "timestamp" in req


def test_handler_logs_carry_run_incident_message_and_trace_ids(json_logs: io.StringIO) -> None:
    log = structlog.get_logger("test")

    async def handler(msg: Message) -> None:
        log.info("inside the handler")

    wrapped = tracing.instrument_handler(handler, subject=Subjects.EVENTS, group="g")
    msg = Message.new(
        AnomalyCleared(device_id="pump1", ts=1.0),
        source="monitor-1",
        subject=Subjects.EVENTS,
        run_id="run-1",
        correlation_id="inc-1",
        traceparent=TRACEPARENT,
    )
    asyncio.run(wrapped(msg))
    [line] = [x for x in _lines(json_logs.getvalue()) if x["event"] == "inside the handler"]
    assert line["run_id"] == "run-1" and line["incident_id"] == "inc-1"
    assert line["message_id"] == str(msg.id)
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.instrument_handler(wrapped, subject="x") is wrapped


def test_trace_context_travels_in_the_envelope(spans: InMemorySpanExporter) -> None:
    async def scenario() -> None:
        bus = await connect(f"memory://trace{uuid.uuid4().hex[:8]}")
        done = asyncio.Event()

        async def first(msg: Message) -> None:
            reply = msg.reply(
                AnomalyCleared(device_id="pump1", ts=2.0),
                source="a",
                subject="crew.control",
                traceparent=None,
            )
            await bus.publish(tracing.stamp(reply))

        async def second(msg: Message) -> None:
            done.set()

        await bus.subscribe(
            "telemetry.pump1",
            tracing.instrument_handler(first, subject="telemetry.pump1", group="first"),
        )
        await bus.subscribe(
            "crew.control",
            tracing.instrument_handler(second, subject="crew.control", group="second"),
        )
        await bus.publish(
            Message.new(
                AnomalyCleared(device_id="pump1", ts=1.0),
                source="plant",
                subject="telemetry.pump1",
                traceparent=TRACEPARENT,
            )
        )
        await asyncio.wait_for(done.wait(), 5)
        await bus.close()

    asyncio.run(scenario())
    by_name = {s.name: s for s in spans.get_finished_spans()}
    a, b = by_name["first anomaly.cleared"], by_name["second anomaly.cleared"]
    assert format(a.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert a.parent is not None and format(a.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert b.context.trace_id == a.context.trace_id
    assert b.parent is not None and b.parent.span_id == a.context.span_id


def test_no_span_and_no_stamp_without_tracing() -> None:
    msg = Message.new(AnomalyCleared(device_id="p", ts=0.0), source="s", subject="crew.control")
    assert tracing.current_traceparent() is None
    assert tracing.stamp(msg) is msg


def _sum(name: str) -> float:
    return sum(s.value for fam in REGISTRY.collect() for s in fam.samples if s.name == name)


def test_process_metrics_move_during_a_scenario_run(tmp_path: Path) -> None:
    from plantcrew.scenarios.runner import run_scenario

    before = {
        n: _sum(n)
        for n in (
            "plantcrew_messages_handled_total",
            "plantcrew_handler_duration_seconds_count",
            "plantcrew_messages_published_total",
        )
    }
    asyncio.run(
        run_scenario(
            SCENARIO,
            bus_url=f"memory://m{uuid.uuid4().hex[:8]}",
            db_url=f"sqlite:///{tmp_path / 'm.db'}",
            stop_after_s=700,
        )
    )
    after = {n: _sum(n) for n in before}
    for name in before:
        assert after[name] > before[name], name
    handled_types = {
        s.labels["type"]
        for fam in REGISTRY.collect()
        for s in fam.samples
        if s.name == "plantcrew_messages_handled_total"
    }
    assert {"telemetry.reading", "anomaly.detected", "task.assigned"} <= handled_types


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_probes_serve_health_readiness_and_metrics() -> None:
    async def scenario() -> None:
        bus = await connect(f"memory://w{uuid.uuid4().hex[:8]}")
        probe = BusProbe("worker-test")
        await probe.attach(bus)
        port = _free_port()
        probes = WorkerProbes(port=port, host="127.0.0.1", checks={"bus": probe.check})
        await probes.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                assert (await c.get("/healthz")).status_code == 200
                assert (await c.get("/startupz")).status_code == 503
                assert (await c.get("/readyz")).status_code == 503
                probes.ready_to_serve()
                assert (await c.get("/startupz")).status_code == 200
                ready = await c.get("/readyz")
                assert ready.status_code == 200 and ready.json()["checks"]["bus"]["ok"]
                await bus.close()  # the bus goes away: not ready, but still alive
                assert (await c.get("/readyz")).status_code == 503
                assert (await c.get("/healthz")).status_code == 200
                m = await c.get("/metrics")
                assert "plantcrew_ready" in m.text and m.headers["x-request-id"]
        finally:
            await probes.stop()

    asyncio.run(scenario())
