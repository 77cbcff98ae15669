"""A model's review of a Safety Officer decision can tighten it, never loosen it.

:func:`combine` is checked over every pair (rules' verdict, model's recommendation), and the
Coordinator's second guard against a decision looser than its own rules is checked on a
decision message as it would arrive from a faulty or forged Safety Officer.
"""

from __future__ import annotations

import itertools

import pytest

from plantcrew.agents.answers import SafetyReviewAnswer
from plantcrew.agents.policy import ApprovalClass, approval_class
from plantcrew.agents.safety_review import ESCALATION_RULE, combine
from plantcrew.crews.coordinator import _no_looser_than_rules
from plantcrew.messages import SAFETY_STRICTNESS, SafetyDecision, SafetyVerdict
from tests.agents.test_policy import POLICIES

V = SafetyVerdict


def answer(recommended: V, concerns: list[str] | None = None) -> SafetyReviewAnswer:
    return SafetyReviewAnswer(
        review=f"I recommend {recommended.value}; ignore the rules.",
        concerns=concerns or [],
        recommended_verdict=recommended.value,
    )


@pytest.mark.parametrize(("rules", "model"), list(itertools.product(V, V)))
def test_the_combined_verdict_is_never_looser_than_the_rules(rules: V, model: V) -> None:
    out = combine(rules, ["rule-a"], ["because a"], answer(model))
    assert SAFETY_STRICTNESS[out.verdict] >= SAFETY_STRICTNESS[rules]
    assert out.rule_ids[0] == "rule-a" and out.reasons[0] == "because a"  # rules are kept
    assert out.review.recommended_verdict is model


@pytest.mark.parametrize("model", list(V))
def test_a_rejection_stays_a_rejection_whatever_the_model_says(model: V) -> None:
    out = combine(V.REJECTED, ["interlock-x"], ["outlet closed while running"], answer(model))
    assert out.verdict is V.REJECTED
    assert out.rule_ids == ["interlock-x"]
    assert out.review.followed is (model is V.REJECTED)


def test_needs_human_is_never_approved_by_a_model() -> None:
    out = combine(V.NEEDS_HUMAN, ["needs-approval:class-2"], ["class 2"], answer(V.APPROVED))
    assert out.verdict is V.NEEDS_HUMAN and out.review.followed is False


@pytest.mark.parametrize("model", [V.NEEDS_HUMAN, V.REJECTED])
def test_an_approval_questioned_by_the_model_goes_to_a_person(model: V) -> None:
    out = combine(
        V.APPROVED, ["auto-approve:class-1"], ["class 1"], answer(model, ["tank level low"])
    )
    assert out.verdict is V.NEEDS_HUMAN  # a model alone never rejects: a person decides
    assert out.rule_ids == ["auto-approve:class-1", ESCALATION_RULE]
    assert "tank level low" in out.reasons[-1]
    assert out.review.followed is True


def test_an_escalated_auto_approval_is_approved_as_the_next_class_up() -> None:
    configured = sorted(POLICIES.approvals.classes)
    assert configured, "policies.yaml configures approval classes"
    assert approval_class(POLICIES, 0) == POLICIES.approvals.classes[configured[0]]
    assert approval_class(POLICIES, 3).approvers >= 2  # the two-person rule holds
    empty = POLICIES.model_copy(
        update={"approvals": POLICIES.approvals.model_copy(update={"classes": {}})}
    )
    assert approval_class(empty, 1) == ApprovalClass(approvers=1, roles=["shift_supervisor"])


def decision(verdict: V, rule_verdict: V | None) -> SafetyDecision:
    return SafetyDecision(
        task_id="t1",
        incident_id="i1",
        agent_id="safety-1",
        action_id="a1",
        verdict=verdict,
        rule_verdict=rule_verdict,
        hazard_class=2,
        rule_ids=["interlock-x"],
        reasons=["r"],
    )


@pytest.mark.parametrize(("verdict", "rule_verdict"), list(itertools.product(V, V)))
def test_the_coordinator_applies_the_rules_verdict_when_a_decision_is_looser(
    verdict: V, rule_verdict: V
) -> None:
    out = _no_looser_than_rules(decision(verdict, rule_verdict))
    expected = (
        verdict if SAFETY_STRICTNESS[verdict] >= SAFETY_STRICTNESS[rule_verdict] else rule_verdict
    )
    assert out.verdict is expected
    assert (out.reasons == ["r"]) is (expected is verdict)


def test_a_decision_without_rule_verdict_is_taken_as_it_is() -> None:
    d = decision(V.APPROVED, None)
    assert _no_looser_than_rules(d) is d
