"""The Safety Officer: judges every ``ActionProposal`` by policy, deterministically.

It keeps the plant's current state from telemetry (``TelemetryCache``) and answers each
``assess_safety`` task with a ``SafetyDecision`` from ``plantcrew.agents.policy.judge``:
``approved``, ``rejected`` (rule ids and reasons) or ``needs_human``.

With a ``router`` and ``model_group`` (``roles.safety.model_group`` in crew.yaml), a model
then writes a review of each decision (:mod:`plantcrew.agents.safety_review`): the decision
carries it, and may become stricter because of it (an approval sent to a person), never
looser. ``rule_verdict`` in the decision always says what the rules alone decided.
"""

from __future__ import annotations

from typing import Any, ClassVar

from plantcrew.agents.base import Agent
from plantcrew.agents.policy import Asset, Policies, approval_class, judge
from plantcrew.agents.safety_review import review_decision
from plantcrew.agents.telemetry_cache import TelemetryCache
from plantcrew.bus import Bus
from plantcrew.llm import ModelRouter
from plantcrew.llm.budget import budget_of
from plantcrew.messages import (
    ActionProposal,
    Capability,
    Message,
    ModelCallInfo,
    SafetyDecision,
    SafetyReview,
    SafetyVerdict,
    Task,
)
from plantcrew.plant.clock import Clock


class SafetyOfficer(Agent):
    """Capability ``assess_safety``; ``router`` + ``model_group`` turn the model review on."""

    role: ClassVar[str] = "safety"
    capabilities: ClassVar[tuple[Capability, ...]] = (Capability.ASSESS_SAFETY,)

    def __init__(
        self,
        agent_id: str,
        bus: Bus,
        clock: Clock,
        *,
        policies: Policies,
        assets: dict[str, Asset],
        router: ModelRouter | None = None,
        model_group: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(agent_id, bus, clock, **kw)
        self.policies, self.assets = policies, assets
        self.router, self.model_group = router, model_group
        self.cache = TelemetryCache()

    async def start(self) -> None:
        await self.cache.start(self.bus)
        await super().start()

    async def stop(self) -> None:
        await self.cache.stop()
        await super().stop()

    async def handle(self, task: Task, msg: Message) -> SafetyDecision:
        proposal = ActionProposal.model_validate(task.input["proposal"])
        state = self.cache.snapshot()
        j = judge(
            self.policies,
            self.assets,
            state,
            device_id=proposal.device_id,
            command=proposal.command,
            parameters=proposal.parameters,
            proposed_class=proposal.hazard_class,
            now=msg.time,
        )
        verdict, rule_ids, reasons = j.verdict, list(j.rule_ids), list(j.reasons)
        review: SafetyReview | None = None
        calls: list[ModelCallInfo] = []
        if self.router is not None and self.model_group:
            combined, calls = await review_decision(
                self.router,
                self.model_group,
                agent_name=self.agent_id,
                proposal=proposal,
                rule_verdict=j.verdict,
                hazard_class=j.hazard_class,
                rule_ids=rule_ids,
                reasons=reasons,
                state=state,
                budget=budget_of(task.input),
            )
            verdict, rule_ids, reasons = combined.verdict, combined.rule_ids, combined.reasons
            review = combined.review
        approvers, roles, timeout_s = j.approvers_required, j.approver_roles, j.timeout_s
        if verdict is SafetyVerdict.NEEDS_HUMAN and j.verdict is SafetyVerdict.APPROVED:
            klass = approval_class(self.policies, j.hazard_class)  # escalated by the review
            approvers, roles, timeout_s = klass.approvers, klass.roles, klass.timeout_s
        return SafetyDecision(
            task_id=task.task_id,
            incident_id=task.incident_id,
            agent_id=self.agent_id,
            action_id=proposal.action_id,
            verdict=verdict,
            rule_verdict=j.verdict,
            review=review,
            hazard_class=j.hazard_class,
            rule_ids=rule_ids,
            reasons=reasons,
            approvers_required=approvers,
            approver_roles=roles,
            approval_timeout_s=timeout_s,
            model_calls=calls,
        )
