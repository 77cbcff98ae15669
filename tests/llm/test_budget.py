"""Budgets: levels from spend, the status carried in a task, and reason() obeying it."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from plantcrew.llm import ModelRouter, reason
from plantcrew.llm.budget import Budgets, BudgetStatus, budget_of
from tests.llm.conftest import stub_deployment, stub_router
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.payloads import DIAGNOSE, DiagnosisOut

GOOD = {
    "root_cause": "cavitation",
    "confidence": 0.7,
    "evidence": ["from the model"],
    "summary": "model says cavitation",
}
LIMITS = Budgets(per_incident_usd=0.05, per_day_usd=1.0, per_agent_day_usd={"diagnostic": 0.5})


@pytest.mark.parametrize(
    ("spend", "agent", "level", "reason_text"),
    [
        ({}, None, "ok", None),
        ({"incident": 0.039, "day": 0.79}, None, "ok", None),
        ({"incident": 0.04, "day": 0.1}, None, "warn", "budget: incident spent $0.0400 of $0.0500"),
        ({"incident": 0.01, "day": 0.85}, None, "warn", "budget: day spent $0.8500 of $1.0000"),
        (
            {"incident": 0.05, "day": 0.9},
            None,
            "exhausted",
            "budget: incident spent $0.0500 of $0.0500",
        ),
        (
            {"incident": 0.045, "day": 1.2},
            None,
            "exhausted",
            "budget: day spent $1.2000 of $1.0000",
        ),
        (
            {"agent": 0.5},
            "diagnostic",
            "exhausted",
            "budget: agent diagnostic today spent $0.5000 of $0.5000",
        ),
        ({"agent": 0.5}, "operator", "ok", None),  # no limit for the operator
    ],
)
def test_levels_follow_the_spend(
    spend: dict[str, float], agent: str | None, level: str, reason_text: str | None
) -> None:
    status = LIMITS.status(spend, agent=agent)
    assert status.level == level
    assert status.reason == reason_text


def test_no_limit_means_no_scope_and_a_zero_limit_is_playbook_only() -> None:
    assert Budgets().status({"incident": 99.0, "day": 99.0}).scopes == []
    assert Budgets().status({"day": 99.0}).level == "ok"
    zero = Budgets(per_day_usd=0).status({})
    assert zero.level == "exhausted" and zero.reason == "budget: day spent $0.0000 of $0.0000"


def test_the_status_survives_the_task_input_and_its_level_cannot_be_forged() -> None:
    status = LIMITS.status({"incident": 0.06}, agent="diagnostic")
    task_input: dict[str, Any] = {"budget": status.model_dump(mode="json")}
    assert task_input["budget"]["level"] == "exhausted"
    assert budget_of(task_input) == status
    task_input["budget"]["level"] = "ok"  # a computed field: read back, never trusted
    back = budget_of(task_input)
    assert back is not None and back.level == "exhausted"
    assert budget_of({}) is None


def test_an_unreadable_budget_fails_safe() -> None:
    status = budget_of({"budget": {"scopes": [{"scope": "day", "spent_usd": "lots"}]}})
    assert status is not None and status.level == "exhausted"
    assert status.reason is not None and status.reason.startswith("budget: unreadable")


def test_after_adds_a_step_s_own_spend_to_every_scope() -> None:
    status = LIMITS.status({"incident": 0.03, "day": 0.5})
    assert status.level == "ok"
    assert status.after(0.011).level == "warn"
    assert status.after(0.02).level == "exhausted"


async def diagnose(router: ModelRouter, budget: BudgetStatus | None) -> tuple[DiagnosisOut, list]:
    return await reason(
        router,
        "triage",
        agent_name="diagnostic-1",
        system="Diagnose.",
        task_text="Diagnose the anomaly.",
        data=DIAGNOSE,
        output_type=DiagnosisOut,
        budget=budget,
    )


async def test_a_spent_budget_runs_the_step_on_the_playbook_without_calling_a_model(
    stub: OpenAIStub,
) -> None:
    stub.script("gpt-4o-mini", Reply.json(GOOD))
    router = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "m"))
    budget = LIMITS.status({"incident": 0.01, "day": 1.0})
    with capture_logs() as logs:
        out, (call,) = await diagnose(router, budget)
    assert stub.count("gpt-4o-mini") == 0
    assert out.evidence == DIAGNOSE["candidates"][0]["evidence"]  # the playbook's answer
    assert (call.deployment, call.fallback, call.ok) == ("triage-playbook", True, True)
    assert call.degraded_reason == "budget: day spent $1.0000 of $1.0000"
    assert any(e["event"] == "reasoning step degraded to the playbook" for e in logs)


async def test_a_nearly_spent_budget_warns_and_still_uses_the_model(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.json(GOOD))
    router = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "m"))
    budget = LIMITS.status({"incident": 0.045, "day": 0.2})
    with capture_logs() as logs:
        out, (call,) = await diagnose(router, budget)
    assert out.evidence == ["from the model"] and stub.count("gpt-4o-mini") == 1
    assert (call.deployment, call.degraded_reason) == ("m", None)
    (warning,) = [e for e in logs if e["event"] == "model budget nearly spent"]
    assert warning["log_level"] == "warning"
    assert warning["budget"] == "budget: incident spent $0.0450 of $0.0500"


async def test_no_repair_attempt_when_the_step_spent_the_rest_of_the_budget(
    stub: OpenAIStub,
) -> None:
    # 11 prompt + 7 completion tokens at $1000/$2000 per million: $0.025 per stub answer
    price = {"input_per_mtok": 1000, "output_per_mtok": 2000}
    stub.script("gpt-4o-mini", Reply.text("not json"), Reply.json(GOOD))
    router = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "m", price=price))
    budget = LIMITS.status({"incident": 0.03, "day": 0.1})  # $0.02 left for the incident
    out, calls = await diagnose(router, budget)
    assert stub.count("gpt-4o-mini") == 1  # the rejected answer; no repair turn
    rejected, last = calls
    assert (rejected.ok, rejected.cost_usd) == (False, pytest.approx(0.025))
    assert last.deployment == "triage-playbook"
    assert last.degraded_reason == ("budget: incident spent $0.0550 of $0.0500 (no repair attempt)")
    assert out.root_cause == "cavitation"


async def test_with_budget_left_the_repair_attempt_is_made(stub: OpenAIStub) -> None:
    price = {"input_per_mtok": 1000, "output_per_mtok": 2000}
    stub.script("gpt-4o-mini", Reply.text("not json"), Reply.json(GOOD))
    router = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "m", price=price))
    out, calls = await diagnose(router, LIMITS.status({"incident": 0.0, "day": 0.1}))
    assert stub.count("gpt-4o-mini") == 2
    assert [(c.ok, c.repaired) for c in calls] == [(False, False), (True, True)]
    assert out.evidence == ["from the model"]
