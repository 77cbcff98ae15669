"""Cost accounting: litellm's tokens and cost per call, stored, summed per scope, budgets."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from plantcrew.llm import reason
from plantcrew.llm.budget import Budgets
from plantcrew.messages import Diagnosis, Message, ModelCallInfo, Subjects
from plantcrew.store import ModelCall, ModelSpend, Store, record_model_calls
from plantcrew.store.costs import (
    BadDateError,
    budget_spend,
    cost_report,
    cost_total,
    spend_usd,
)
from tests.conftest import PG_URL, require_server
from tests.llm.conftest import stub_deployment, stub_router
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.payloads import DIAGNOSE, DiagnosisOut

PRICE = {"input_per_mtok": 1000, "output_per_mtok": 2000}  # $0.025 per stub answer (11 + 7)
GOOD = {"root_cause": "cavitation", "confidence": 0.7, "evidence": ["e"], "summary": "s"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'costs.db'}")


def call(
    deployment: str = "m",
    cost: float = 0.01,
    *,
    ok: bool = True,
    fallback: bool = False,
    repaired: bool = False,
    degraded: str | None = None,
    tokens: tuple[int, int] = (100, 20),
) -> ModelCallInfo:
    return ModelCallInfo(
        model_group="reasoning",
        deployment=deployment,
        model=f"openai/{deployment}",
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        cost_usd=cost,
        ok=ok,
        fallback=fallback,
        repaired=repaired,
        degraded_reason=degraded,
    )


def record(
    store: Store, calls: list[ModelCallInfo], *, run: str, incident: str, agent: str, when: datetime
) -> None:
    payload = Diagnosis(
        task_id=f"{incident}-diagnose-1",
        incident_id=incident,
        agent_id=agent,
        root_cause="cavitation",
        confidence=0.7,
        model_calls=calls,
    )
    msg = Message.new(
        payload,
        source=agent,
        subject=Subjects.EVENTS,
        run_id=run,
        correlation_id=incident,
        time=when,
    )
    with store.tx() as s:
        record_model_calls(s, calls, msg=msg, agent=agent, task_id=payload.task_id)


DAY1 = datetime(2026, 3, 1, 10, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def seed(store: Store) -> None:
    record(
        store,
        [call("a", 0.01, ok=False, tokens=(50, 0)), call("b", 0.02, fallback=True)],
        run="run-1",
        incident="inc-1",
        agent="diagnostic-1",
        when=DAY1,
    )
    record(
        store,
        [call("a", 0.03), call("a", 0.04, repaired=True)],
        run="run-1",
        incident="inc-1",
        agent="operator-1",
        when=DAY1,
    )
    record(
        store,
        [call("reasoning-playbook", 0.0, fallback=True, degraded="budget: day")],
        run="run-1",
        incident="inc-2",
        agent="operator-2",
        when=DAY2,
    )
    record(store, [call("a", 0.5)], run="run-2", incident="inc-3", agent="operators-1", when=DAY2)


def test_the_report_sums_each_scope(store: Store) -> None:
    seed(store)
    with store.tx() as s:
        report = cost_report(s, run_id="run-1")
    total = report.total
    assert (
        total.calls,
        total.ok,
        total.failed,
        total.fallback,
        total.repaired,
        total.degraded,
    ) == (5, 4, 1, 2, 1, 1)
    assert total.cost_usd == pytest.approx(0.10)
    assert (total.prompt_tokens, total.completion_tokens) == (450, 80)
    by_dep = {r.key: (r.calls, round(r.cost_usd, 6), r.models) for r in report.by_deployment}
    assert by_dep == {
        "a": (3, 0.08, "openai/a"),
        "b": (1, 0.02, "openai/b"),
        "reasoning-playbook": (1, 0.0, "openai/reasoning-playbook"),
    }
    assert {r.key: round(r.cost_usd, 6) for r in report.by_incident} == {
        "inc-1": 0.10,
        "inc-2": 0.0,
    }
    assert [r.key for r in report.by_agent] == ["diagnostic-1", "operator-1", "operator-2"]
    assert {r.key: r.calls for r in report.by_day} == {"2026-03-01": 4, "2026-03-02": 1}
    assert report.to_json()["total"]["tokens"] == 530


def test_since_a_day_and_every_run(store: Store) -> None:
    seed(store)
    with store.tx() as s:
        everything = cost_report(s)
        later = cost_report(s, since="2026-03-02")
        assert cost_report(s, since=date(2026, 3, 2)) == later
        with pytest.raises(BadDateError):
            cost_report(s, since="yesterday")
    assert everything.total.calls == 6 and everything.total.cost_usd == pytest.approx(0.6)
    assert later.total.calls == 2 and later.total.cost_usd == pytest.approx(0.5)
    assert [r.key for r in later.by_incident] == ["inc-2", "inc-3"]


def test_budget_spend_per_incident_day_and_role(store: Store) -> None:
    seed(store)
    with store.tx() as s:
        spend = budget_spend(s, incident_id="inc-1", day="2026-03-01", agent="operator")
        assert spend == pytest.approx({"incident": 0.10, "day": 0.10, "agent": 0.07})
        # "operator" is every operator-<n> worker, not "operators-1"
        assert spend_usd(s, agent="operator") == pytest.approx(0.07)
        assert spend_usd(s, agent="operator-2") == 0.0
        assert budget_spend(s, incident_id=None, day=DAY2.date()) == pytest.approx(
            {"incident": 0.0, "day": 0.5, "agent": 0.0}
        )
        status = Budgets(per_incident_usd=0.12, per_day_usd=0.5).status(
            budget_spend(s, incident_id="inc-2", day=DAY2.date())
        )
    assert status.level == "exhausted"
    assert status.reason == "budget: day spent $0.5000 of $0.5000"


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_budget_spend_is_the_spend_of_each_scope(
    request: pytest.FixtureRequest, tmp_path: Path, db: str
) -> None:
    # the one-query form agrees with each scope summed on its own, on both databases: an
    # incident across two days, a role and its workers (not a longer role, not a wildcard)
    url = (
        f"sqlite:///{tmp_path / 'b.db'}"
        if db == "sqlite"
        else request.getfixturevalue("pg_schema_url")
    )
    store = Store(url)
    try:
        seed(store)
        record(store, [call("a", 0.2)], run="run-1", incident="inc-1", agent="operator-3",
               when=DAY2)  # fmt: skip
        record(store, [call("a", 0.7)], run="run-3", incident="inc-9", agent="op_rator-1",
               when=DAY2)  # fmt: skip
        with store.tx() as s:
            for incident, day, agent in [
                ("inc-1", DAY2.date(), "operator"),
                ("inc-1", DAY1.date(), "diagnostic"),
                (None, DAY2.date(), "op_rator"),
                ("inc-3", DAY2.date(), None),
            ]:
                got = budget_spend(s, incident_id=incident, day=day, agent=agent)
                want = {
                    "incident": spend_usd(s, incident_id=incident) if incident else 0.0,
                    "day": spend_usd(s, day=day),
                    "agent": spend_usd(s, agent=agent, day=day) if agent else 0.0,
                }
                assert got == pytest.approx(want), (incident, day, agent)
            assert budget_spend(s, incident_id="inc-1", day=DAY2.date(), agent="operator") == (
                pytest.approx({"incident": 0.3, "day": 1.4, "agent": 0.2})
            )
            assert budget_spend(s, incident_id=None, day=DAY2.date(), agent="op%")["agent"] == 0
    finally:
        store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store on a SQLite file, or on a fresh PostgreSQL schema."""
    url = f"sqlite:///{tmp_path / 'b.db'}" if request.param == "sqlite" else (
        request.getfixturevalue("pg_schema_url"))  # fmt: skip
    store = Store(url)
    yield store
    store.dispose()


AGENTS = ["operator", "operator-1", "operator-host-7", "operators-1", "op_rator-1", "op%-2",
          "-x", "", "a--b", "operator-", "reviewer-1"]  # fmt: skip
QUERIES = ["operator", "operator-1", "operator-host", "operator-h", "operators", "op_rator",
           "op%", "op", "-x", "x", "a", "a-", "a--b", "operator-", "reviewer",
           "nobody"]  # fmt: skip


def test_budget_spend_reads_the_sums_over_the_calls(any_store: Store) -> None:
    # the running spend agrees with the calls summed as the LIKE over model_call did, for
    # every agent id and query, in the transaction that records calls (before they are written
    # to model_spend) and after it commits
    store, rng, days = any_store, random.Random(7), [DAY1, DAY2]
    for _ in range(12):
        with store.tx() as s:
            for _ in range(rng.randrange(1, 4)):
                when, agent = rng.choice(days), rng.choice(AGENTS)
                payload = Diagnosis(
                    task_id="t", incident_id="inc-1", agent_id=agent, root_cause="c", confidence=0.5
                )
                msg = Message.new(
                    payload,
                    source="x",
                    subject=Subjects.EVENTS,
                    run_id="run-1",
                    correlation_id="inc-1",
                    time=when,
                )
                calls = [call("a", rng.randrange(1, 1000) / 1000)]
                record_model_calls(s, calls, msg=msg, agent=agent, task_id="t")
            for q in QUERIES[:4]:
                got = budget_spend(s, incident_id="inc-1", day=when.date(), agent=q)
                assert got == pytest.approx(
                    {
                        "incident": spend_usd(s, incident_id="inc-1"),
                        "day": spend_usd(s, day=when.date()),
                        "agent": spend_usd(s, agent=q, day=when.date()),
                    }
                ), q
    with store.tx() as s:
        for day in days:
            for q in QUERIES:
                got = budget_spend(s, incident_id=None, day=day.date(), agent=q)
                want = {
                    "incident": 0.0,
                    "day": spend_usd(s, day=day.date()),
                    "agent": spend_usd(s, agent=q, day=day.date()),
                }
                assert got == pytest.approx(want, abs=1e-12), (day, q)


async def test_litellm_cost_is_stored_per_call_and_a_spent_budget_stops_the_models(
    stub: OpenAIStub, store: Store
) -> None:
    stub.script("priced", Reply.json(GOOD))
    router = stub_router(stub, stub_deployment(stub, "priced", "priced", price=PRICE))
    budgets = Budgets(per_incident_usd=0.06)
    answers = []
    for _ in range(4):  # one incident: $0.025 per step until its budget is spent
        with store.tx() as s:
            status = budgets.status(budget_spend(s, incident_id="inc-1", day=DAY1.date()))
        _, calls = await reason(
            router,
            "triage",
            agent_name="diagnostic-1",
            system="S",
            task_text="T",
            data=DIAGNOSE,
            output_type=DiagnosisOut,
            budget=status,
        )
        answers.append([(c.deployment, c.degraded_reason) for c in calls])
        record(store, calls, run="run-1", incident="inc-1", agent="diagnostic-1", when=DAY1)
    assert answers == [
        [("priced", None)],
        [("priced", None)],
        [("priced", None)],  # $0.05 spent: a warning (83 %), still the model
        [("triage-playbook", "budget: incident spent $0.0750 of $0.0600")],
    ]
    assert stub.count("priced") == 3
    with store.tx() as s:
        rows = s.exec(select(ModelCall).order_by(col(ModelCall.id))).all()
        total = cost_total(s, incident_id="inc-1")
    assert [r.cost_usd for r in rows] == pytest.approx([0.025, 0.025, 0.025, 0.0])
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows[:3]] == [(11, 7)] * 3
    assert rows[3].prompt_tokens > 0  # the playbook's estimate
    assert total.cost_usd == pytest.approx(0.075) and total.degraded == 1


def test_the_queries_run_on_postgresql() -> None:
    require_server("postgresql", "127.0.0.1", 5432)
    store = Store(PG_URL)
    run = f"run-{uuid.uuid4().hex[:12]}"
    # a day of its own, so other tests sharing the database do not count
    day = datetime(2300, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(300_000))
    try:
        record(
            store,
            [call("a", 0.25), call("b", 0.5, fallback=True)],
            run=run,
            incident=f"{run}-inc",
            agent="reviewer-1",
            when=day,
        )
        with store.tx() as s:
            report = cost_report(s, run_id=run)
            spend = budget_spend(s, incident_id=f"{run}-inc", day=day.date(), agent="reviewer")
        assert report.total.calls == 2 and report.total.fallback == 1
        assert [r.key for r in report.by_deployment] == ["a", "b"]
        assert spend == pytest.approx({"incident": 0.75, "day": 0.75, "agent": 0.75})
    finally:
        with store.tx() as s:
            for row in s.exec(select(ModelCall).where(col(ModelCall.run_id) == run)).all():
                s.delete(row)
            for spent in s.exec(
                select(ModelSpend).where(col(ModelSpend.day) == day.date().isoformat())
            ).all():
                s.delete(spent)
        store.dispose()
