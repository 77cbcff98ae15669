"""The Safety Officer: judges every ``ActionProposal`` by policy, deterministically.

It keeps the plant's current state from telemetry (``TelemetryCache``) and answers each
``assess_safety`` task with a ``SafetyDecision`` from ``plantcrew.agents.policy.judge``:
``approved``, ``rejected`` (rule ids and reasons) or ``needs_human``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from plantcrew.agents.base import Agent
from plantcrew.agents.policy import Asset, Policies, judge
from plantcrew.agents.telemetry_cache import TelemetryCache
from plantcrew.bus import Bus
from plantcrew.messages import ActionProposal, Capability, Message, SafetyDecision, Task
from plantcrew.plant.clock import Clock


class SafetyOfficer(Agent):
    """Capability ``assess_safety``."""

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
        **kw: Any,
    ) -> None:
        super().__init__(agent_id, bus, clock, **kw)
        self.policies, self.assets = policies, assets
        self.cache = TelemetryCache()

    async def start(self) -> None:
        await self.cache.start(self.bus)
        await super().start()

    async def stop(self) -> None:
        await self.cache.stop()
        await super().stop()

    async def handle(self, task: Task, msg: Message) -> SafetyDecision:
        proposal = ActionProposal.model_validate(task.input["proposal"])
        j = judge(
            self.policies,
            self.assets,
            self.cache.snapshot(),
            device_id=proposal.device_id,
            command=proposal.command,
            parameters=proposal.parameters,
            proposed_class=proposal.hazard_class,
            now=msg.time,
        )
        return SafetyDecision(
            task_id=task.task_id,
            incident_id=task.incident_id,
            agent_id=self.agent_id,
            action_id=proposal.action_id,
            verdict=j.verdict,
            hazard_class=j.hazard_class,
            rule_ids=j.rule_ids,
            reasons=j.reasons,
            approvers_required=j.approvers_required,
            approver_roles=j.approver_roles,
            approval_timeout_s=j.timeout_s,
        )
