"""Incidents, timelines, the SSE stream, runs and their export, on a real scenario run."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from plantcrew.api import ApiSettings, create_app
from plantcrew.api.sse import STREAM_TYPES
from plantcrew.store import Store
from tests.api.conftest import Api, FinishedRun, make_tokens

HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture
def run_api(finished_run: FinishedRun, model_router: object) -> Iterator[Api]:
    store = Store(finished_run.db_url)
    app = create_app(
        ApiSettings(sse_poll_s=0.05),
        store=store,
        bus_url="memory://incidents-api",
        router=model_router,
    )
    with TestClient(app) as client:
        yield Api(app, client, store, make_tokens(store))


def frames(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in block.splitlines()
            if ": " in line and not line.startswith(":")
        )
        if "data" in fields:
            out.append(fields)
    return out


def test_incident_list_detail_and_timeline(run_api: Api, finished_run: FinishedRun) -> None:
    assert finished_run.passed
    r = run_api.client.get(
        f"/api/v1/incidents?run_id={finished_run.run_id}", headers=run_api.h("viewer")
    )
    assert r.status_code == 200
    [inc] = r.json()
    assert inc["status"] == "resolved" and inc["root_cause"] == "bearing_overheating"
    detail = run_api.client.get(f"/api/v1/incidents/{inc['id']}", headers=run_api.h("viewer"))
    d = detail.json()
    assert [(a["command"], a["status"]) for a in d["actions"]] == [("stop", "executed")]
    [appr] = d["approvals"]
    assert appr["status"] == "approved" and appr["decisions"][0]["approver"] == "alice"
    tl = run_api.client.get(f"/api/v1/incidents/{inc['id']}/timeline", headers=run_api.h("viewer"))
    events = tl.json()
    types = [e["type"] for e in events]
    for kind in (
        "task.assigned",
        "diagnosis.made",
        "approval.requested",
        "approval.decided",
        "action.executed",
        "review.completed",
    ):
        assert kind in types
    assert (
        types.index("approval.requested")
        < types.index("approval.decided")
        < types.index("action.executed")
    )
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    actuate = [
        e
        for e in events
        if e["type"] == "task.assigned" and e["payload"]["capability"] == "actuate"
    ]
    assert actuate and actuate[0]["payload"]["input"]["token"] == "[redacted]"
    assert not HEX64.search(tl.text)
    assert (
        run_api.client.get("/api/v1/incidents/nope", headers=run_api.h("viewer")).status_code == 404
    )
    r = run_api.client.get("/api/v1/incidents?status=escalated", headers=run_api.h("viewer"))
    assert r.json() == []


def test_stream_replays_from_a_seq_and_resumes_after_last_event_id(run_api: Api) -> None:
    r = run_api.client.get("/api/v1/incidents/stream?since=0&limit=5", headers=run_api.h("viewer"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    got = frames(r.text)
    assert len(got) == 5
    seqs = [int(f["id"]) for f in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert all(f["event"] in STREAM_TYPES for f in got)
    first = json.loads(got[0]["data"])
    assert first["seq"] == seqs[0] and first["type"] == got[0]["event"]
    more = run_api.client.get(
        "/api/v1/incidents/stream?limit=2",
        headers=run_api.h("viewer", **{"Last-Event-ID": str(seqs[2])}),
    )
    assert [int(f["id"]) for f in frames(more.text)] == seqs[3:5]
    bad = run_api.client.get(
        "/api/v1/incidents/stream?limit=1", headers=run_api.h("viewer", **{"Last-Event-ID": "x"})
    )
    assert bad.status_code == 422


def test_stream_refuses_a_since_past_the_seq_range(run_api: Api) -> None:
    # as Last-Event-ID: at most 18 digits (a larger one overflowed SQLite's integer mid-stream)
    r = run_api.client.get(
        f"/api/v1/incidents/stream?since={10**18}&max_s=0.2", headers=run_api.h("viewer")
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.since"
    ok = run_api.client.get(
        f"/api/v1/incidents/stream?since={10**18 - 1}&max_s=0.2", headers=run_api.h("viewer")
    )
    assert ok.status_code == 200 and frames(ok.text) == []


def test_runs_and_replay_export(run_api: Api, finished_run: FinishedRun) -> None:
    runs = run_api.client.get("/api/v1/runs", headers=run_api.h("viewer")).json()
    assert [r["id"] for r in runs] == [finished_run.run_id]
    assert runs[0]["status"] == "passed"
    assert run_api.client.get("/api/v1/runs/nope", headers=run_api.h("viewer")).status_code == 404
    r = run_api.client.get(
        f"/api/v1/runs/{finished_run.run_id}/export", headers=run_api.h("operator")
    )
    assert r.status_code == 200
    exp = r.json()
    assert exp["format"] == "plantcrew.replay/1"
    recorded = run_api.store.messages(finished_run.run_id)
    assert [m["seq"] for m in exp["messages"]] == [m.seq for m in recorded]
    assert [m["message"]["id"] for m in exp["messages"]] == [m.id for m in recorded]
    assert exp["approvals"][0]["status"] == "approved"
    assert not HEX64.search(r.text)


def test_store_metrics_after_the_run(run_api: Api) -> None:
    text = run_api.client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("plantcrew_incidents", (("status", "resolved"),))] == 1
    assert samples[("plantcrew_time_to_resolve_seconds_count", ())] == 1
    assert samples[("plantcrew_time_to_detect_seconds_count", ())] == 1
    assert samples[("plantcrew_approvals_pending", ())] == 0
    assert samples[("plantcrew_approvals_total", (("status", "approved"),))] == 1
    assert samples[("plantcrew_actions", (("status", "executed"),))] == 1
    calls = sum(v for (n, _), v in samples.items() if n == "plantcrew_model_calls_total")
    assert calls >= 2
    assert samples[("plantcrew_store_scrape_ok", ())] == 1
