"""The scripted human of a scenario: answers approval requests as the scenario says."""

from __future__ import annotations

from plantcrew.scenarios.schema import HumanRule
from plantcrew.store import Action, Approval, Store


class ScriptedHuman:
    """Casts votes for pending approvals of ``run_id`` whose request matches a rule, once the
    rule's ``after_s`` has passed since the request (plant seconds). Deterministic."""

    def __init__(self, store: Store, run_id: str, rules: list[HumanRule]) -> None:
        self.store, self.run_id, self.rules = store, run_id, rules
        self._done: set[tuple[str, int]] = set()

    def _matches(self, rule: HumanRule, approval: Approval, action: Action | None) -> bool:
        m = rule.match
        if m.hazard_class is not None and m.hazard_class != approval.hazard_class:
            return False
        if action is None:
            return m.command is None and m.device is None
        return (m.command in (None, action.command)) and (m.device in (None, action.device_id))

    def act(self, now: float) -> int:
        """Vote where due; returns how many votes were cast."""
        if not self.rules:
            return 0
        cast = 0
        pending = self.store.approvals(status="pending", run_id=self.run_id)
        if not pending:
            return 0
        actions = {a.id: a for a in self.store.actions(run_id=self.run_id)}
        for approval in pending:
            for i, rule in enumerate(self.rules):
                key = (approval.id, i)
                if key in self._done or rule.decision == "ignore":
                    continue
                if any(d["approver"] == rule.approver for d in approval.decisions):
                    continue  # voted before (e.g. before a restart)
                if not self._matches(rule, approval, actions.get(approval.action_id)):
                    continue
                if now < approval.requested_at + rule.after_s:
                    continue
                self._done.add(key)
                self.store.cast_vote(
                    approval.id,
                    approver=rule.approver,
                    role=rule.role,
                    approved=rule.decision == "approve",
                    reason=rule.reason,
                )
                cast += 1
        return cast
