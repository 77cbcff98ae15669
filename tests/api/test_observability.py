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
from plantcrew.bus import Handler, connect
from plantcrew.logs import configure
from plantcrew.messages import AnomalyCleared, Message, Subjects, Task
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


@pytest.mark.parametrize("json_lines", [False, True], ids=["console", "json"])
def test_an_unhandled_error_is_logged_with_its_traceback_and_no_token(
    api: Api, json_lines: bool
) -> None:
    saved = structlog.get_config()
    configure("INFO", json=json_lines)
    out = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    try:
        with api.store.engine.begin() as conn:  # the database fails under the next request
            conn.exec_driver_sql("DROP TABLE api_token")
        r = api.client.get("/api/v1/incidents", headers=api.h("viewer"))
    finally:
        structlog.configure(**saved)
        structlog.contextvars.clear_contextvars()
    assert r.status_code == 500
    logged = out.getvalue()
    assert "no such table: api_token" in logged  # the 500 answer says "its log has the details"
    secret = api.tokens["viewer"].split("_", 2)[2]
    assert secret not in logged  # the bearer token (a local of the failing frames) stays out


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
    _deliver(wrapped, msg, subject=Subjects.EVENTS)
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


def _count(name: str, **labels: str) -> float:
    return sum(
        s.value
        for fam in REGISTRY.collect()
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_process_metrics_move_during_a_scenario_run(tmp_path: Path) -> None:
    from plantcrew.scenarios.runner import run_scenario

    before = {
        n: _count(n)
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
    after = {n: _count(n) for n in before}
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


# ---- the handler context on the hot path (ids added at log time, no span without tracing) ---


def _by_event(out: io.StringIO) -> dict[str, dict[str, object]]:
    return {x["event"]: x for x in map(json.loads, out.getvalue().splitlines())}


def _msg(subject: str = Subjects.EVENTS, **fields: object) -> Message:
    return Message.new(
        AnomalyCleared(device_id="p1", ts=1.0), source="s", subject=subject, **fields
    )


def _deliver(handler: Handler, msg: Message, *, subject: str, group: str | None = None) -> None:
    """Run one delivery of ``msg`` to ``handler`` as a bus subscriber would (instrumented)."""

    async def go() -> None:
        await tracing.instrument_handler(handler, subject=subject, group=group)(msg)

    asyncio.run(go())


def test_ids_are_on_lines_inside_the_handler_only_and_nested_handlers_restore(
    json_logs: io.StringIO,
) -> None:
    log = structlog.get_logger("t")
    inner_msg = _msg(run_id="run-2", correlation_id="inc-2")
    task = Task(task_id="t1", incident_id="inc-9", capability="diagnose")
    task_msg = Message.new(task, source="s", subject=Subjects.tasks("diagnose"), run_id="run-3")

    async def inner(msg: Message) -> None:
        log.info("inner")

    async def outer(msg: Message) -> None:
        log.info("outer before", message_id="explicit")  # the line's own key wins
        await tracing.instrument_handler(inner, subject=Subjects.EVENTS)(inner_msg)
        log.info("outer after")

    async def on_task(msg: Message) -> None:
        log.info("task")

    outer_msg = _msg(run_id="run-1", correlation_id="run-1", traceparent=TRACEPARENT)
    _deliver(outer, outer_msg, subject=Subjects.EVENTS)
    _deliver(on_task, task_msg, subject="crew.tasks.>")
    log.info("outside")
    lines = _by_event(json_logs)
    assert lines["outer before"]["message_id"] == "explicit"
    assert lines["outer before"]["run_id"] == "run-1"
    assert "incident_id" not in lines["outer before"]  # correlation is the run, no incident
    assert lines["outer before"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert lines["inner"]["message_id"] == str(inner_msg.id)
    assert lines["inner"]["incident_id"] == "inc-2" and "trace_id" not in lines["inner"]
    assert lines["outer after"]["message_id"] == str(outer_msg.id)
    assert lines["task"]["incident_id"] == "inc-9" and lines["task"]["run_id"] == "run-3"
    assert "message_id" not in lines["outside"] and tracing.handled_message() is None


def test_new_messages_inherit_the_handled_trace_context_without_a_tracer() -> None:
    assert not tracing.tracing_on()
    made: list[Message] = []

    async def handler(msg: Message) -> None:
        made.append(tracing.stamp(_msg(subject="crew.control")))

    _deliver(handler, _msg(subject="telemetry.p1", traceparent=TRACEPARENT), subject="t.>")
    _deliver(handler, _msg(subject="telemetry.p1"), subject="t.>")
    assert [m.traceparent for m in made] == [TRACEPARENT, None]


def test_outcomes_are_counted_and_errors_propagate() -> None:
    labels = {"subject": "crew.control", "type": "anomaly.cleared"}
    ok0 = _count("plantcrew_messages_handled_total", outcome="ok", **labels)
    err0 = _count("plantcrew_messages_handled_total", outcome="error", **labels)
    n0 = _count("plantcrew_handler_duration_seconds_count", **labels)
    pub0 = _count("plantcrew_messages_published_total", **labels)

    async def fine(msg: Message) -> None:
        return None

    async def broken(msg: Message) -> None:
        raise RuntimeError("boom")

    msg = _msg(subject="crew.control")
    _deliver(fine, msg, subject="crew.control")
    with pytest.raises(RuntimeError):
        _deliver(broken, msg, subject="crew.control")
    tracing.stamp(msg)
    assert _count("plantcrew_messages_handled_total", outcome="ok", **labels) == ok0 + 1
    assert _count("plantcrew_messages_handled_total", outcome="error", **labels) == err0 + 1
    assert _count("plantcrew_handler_duration_seconds_count", **labels) == n0 + 2
    assert _count("plantcrew_messages_published_total", **labels) == pub0 + 1


def test_spans_only_when_tracing_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def handler(msg: Message) -> None:
        return None

    _deliver(handler, _msg(traceparent=TRACEPARENT), subject=Subjects.EVENTS, group="g")
    monkeypatch.setitem(tracing._configured, "provider", provider)
    _deliver(handler, _msg(traceparent=TRACEPARENT), subject=Subjects.EVENTS, group="g")
    _deliver(handler, _msg(subject="telemetry.p1"), subject="telemetry.>")  # untraced: no span
    [span] = exporter.get_finished_spans()
    assert span.name == "g anomaly.cleared"
    assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
