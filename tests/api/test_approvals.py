"""Decisions on approvals through the API: a vote after the approval's deadline is refused by
the API itself (409), as the Coordinator would refuse it."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from plantcrew.store import Approval, ApprovalVote, MessageRecord
from tests.api.conftest import Api, seed_pending_approval

SCENARIO_RUN = {"config": {"scenario": {"name": "seeded"}}}


def _votes(api: Api) -> list[ApprovalVote]:
    with api.store.tx() as s:
        return list(s.exec(select(ApprovalVote)).all())


def _live_run_started_long_ago() -> dict[str, Any]:
    return {"started_at": datetime.now(UTC) - timedelta(seconds=5000)}


@pytest.mark.parametrize(
    "run",
    [
        lambda: {**SCENARIO_RUN, "plant_time": 1000.0},  # the runner's checkpoint
        _live_run_started_long_ago,  # a live run's plant time is the wall clock
    ],
    ids=["scenario-checkpoint", "live-run"],
)
@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_vote_after_the_deadline_is_refused_with_409(
    api: Api, run: Callable[[], dict[str, Any]], verb: str
) -> None:
    appr = seed_pending_approval(api.store, run=run())
    r = api.client.post(
        f"/api/v1/approvals/{appr.id}/{verb}", headers=api.h("approver"), json={"reason": "x"}
    )
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["title"] == "Conflict"
    assert appr.id in problem["detail"] and "deadline, plant 910 s" in problem["detail"]
    at = re.search(r"is at plant ([0-9.]+) s", problem["detail"])
    assert at is not None and float(at.group(1)) >= 1000
    assert _votes(api) == []


def test_a_recorded_message_past_the_deadline_closes_the_vote(api: Api) -> None:
    # the Coordinator recorded a message at plant 950 s: its clock is past the deadline (910 s)
    appr = seed_pending_approval(api.store, run=SCENARIO_RUN)
    ok = seed_pending_approval(api.store, run={**SCENARIO_RUN, "plant_time": 900.0})
    with api.store.tx() as s:
        s.add(
            MessageRecord(
                id="m-late",
                run_id=appr.run_id,
                correlation_id=appr.incident_id,
                type="incident.updated",
                source="coordinator",
                subject="crew.events",
                time=datetime.now(UTC),
                plant_time=950.0,
                body="{}",
            )
        )
    r = api.client.post(f"/api/v1/approvals/{appr.id}/approve", headers=api.h("approver"))
    assert r.status_code == 409 and "950" in r.json()["detail"], r.text
    # another run's approval whose run is still before its deadline is taken
    r = api.client.post(f"/api/v1/approvals/{ok.id}/approve", headers=api.h("approver"))
    assert r.status_code == 202, r.text
    assert [v.approval_id for v in _votes(api)] == [ok.id]


def test_approvals_and_runs_are_listed_page_by_page(api: Api) -> None:
    seeded = [seed_pending_approval(api.store) for _ in range(3)]
    pages = [
        api.client.get(f"/api/v1/approvals?limit=2&offset={o}", headers=api.h("viewer"))
        for o in (0, 2)
    ]
    assert all(p.status_code == 200 for p in pages), [p.text for p in pages]
    ids = [[a["id"] for a in p.json()] for p in pages]
    assert [len(i) for i in ids] == [2, 1]
    assert sorted(ids[0] + ids[1]) == sorted(a.id for a in seeded)
    runs = [
        api.client.get(f"/api/v1/runs?limit=2&offset={o}", headers=api.h("viewer")).json()
        for o in (0, 2)
    ]
    assert [len(r) for r in runs] == [2, 1]
    assert sorted(r["id"] for page in runs for r in page) == sorted(a.run_id for a in seeded)
    too_many = api.client.get("/api/v1/approvals?limit=501", headers=api.h("viewer"))
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "query.limit"


def _oldest_wait(api: Api) -> float:
    text = api.client.get("/metrics").text
    [value] = [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "plantcrew_approval_oldest_wait_seconds"
    ]
    return float(value)


def test_the_oldest_approval_wait_counts_on_a_live_run(api: Api) -> None:
    # live operation never checkpoints Run.plant_time: its plant time is the wall clock
    live = seed_pending_approval(api.store, run=_live_run_started_long_ago())  # asked at 610 s
    seed_pending_approval(api.store, run={**SCENARIO_RUN, "plant_time": 700.0})
    assert _oldest_wait(api) >= 5000 - 610
    with api.store.tx() as s:  # the live one decided: the scenario's, by its checkpoint
        row = s.get(Approval, live.id)
        assert row is not None
        row.status = "approved"
        s.add(row)
    assert _oldest_wait(api) == 90.0
