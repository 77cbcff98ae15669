"""At-most-once actuation: consume the approval and record the command in one transaction.

The action's row is read ``FOR UPDATE`` (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
serialises), so of several executors claiming one action at once exactly one gets to send.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, update

from plantcrew.errors import ApprovalError, NotFoundError
from plantcrew.store.db import Database
from plantcrew.store.tables import Action, Approval
from plantcrew.store.tokens import check_token

ACTION = Action.__table__  # type: ignore[attr-defined]
APPROVAL = Approval.__table__  # type: ignore[attr-defined]
# built once, executed with parameters (SQLAlchemy's compiled cache)
_CLAIM = select(ACTION).where(ACTION.c.id == bindparam("action_id")).with_for_update()
_APPROVAL = select(APPROVAL).where(APPROVAL.c.id == bindparam("approval_id"))
_CONSUME = (
    update(APPROVAL)
    .where(APPROVAL.c.id == bindparam("approval_id"))
    .values(consumed_at=bindparam("plant_time"))
)
_EXECUTING = (
    update(ACTION)
    .where(ACTION.c.id == bindparam("action_id"))
    .values(
        status="executing",
        approval_id=bindparam("approval_id"),
        executed_at=bindparam("plant_time"),
    )
)
_FINISH = (
    update(ACTION)
    .where(ACTION.c.id == bindparam("action_id"))
    .values(status=bindparam("status"), receipt=bindparam("receipt"))
)


def begin_execution(
    db: Database, *, action_id: str, approval_id: str, token: str, plant_time: float
) -> tuple[Action, bool]:
    """Claim an approved action for execution.

    Returns ``(action, True)`` when the caller must now send the command, or
    ``(action, False)`` when it was claimed before (a redelivery or restart): never send twice.
    Raises ApprovalError for a forged, mismatched, unapproved or already-consumed approval,
    NotFoundError for an unknown action.
    """
    with db.tx() as s:
        found = s.execute(_CLAIM, {"action_id": action_id}).first()
        if found is None:
            raise NotFoundError(f"no action {action_id!r}")
        action = Action(**found._mapping)
        if action.status in ("executing", "executed"):
            return action, False
        approval = s.execute(_APPROVAL, {"approval_id": approval_id}).first()
        if approval is None:
            raise ApprovalError(f"no approval {approval_id!r}")
        if approval.action_id != action.id:
            raise ApprovalError(
                f"approval {approval_id} is for action {approval.action_id}, not {action.id}"
            )
        if approval.status != "approved":
            raise ApprovalError(f"approval {approval_id} is {approval.status}, not approved")
        if approval.consumed_at is not None:
            raise ApprovalError(f"approval {approval_id} was used already")
        check_token(
            token, approval.id, action.id, action.device_id, action.command, action.parameters
        )
        ids = {"action_id": action_id, "approval_id": approval_id, "plant_time": plant_time}
        s.execute(_CONSUME, ids)
        s.execute(_EXECUTING, ids)
        action.status, action.approval_id, action.executed_at = "executing", approval_id, plant_time
        return action, True


def finish_execution(db: Database, action_id: str, *, status: str, receipt: dict[str, Any]) -> None:
    """Record the actuator's answer: ``executed`` or ``failed``."""
    with db.tx() as s:
        done = s.execute(_FINISH, {"action_id": action_id, "status": status, "receipt": receipt})
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFoundError(f"no action {action_id!r}")
