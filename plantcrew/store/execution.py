"""At-most-once actuation: consume the approval and record the command in one transaction.

The action's row is read ``FOR UPDATE`` (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
serialises), so of several executors claiming one action at once exactly one gets to send.

Each claim is numbered (``action.claim``, a fencing token): the first is 1, and an executor
that finds the action still ``executing`` (its claimant died, hung or was cut off from the
bus, and its task came back) takes it over as the next number and sends again with the same
idempotency key. Only the newest claim may record the outcome: a superseded claimant that
comes back late (its plant answer delayed by a partition, or its own timeout firing after the
takeover) gets a ConflictError and records nothing, so it cannot overwrite the outcome the
newer one recorded (e.g. "failed: outcome unknown" over "executed").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, update

from plantcrew.errors import ApprovalError, ConflictError, NotFoundError
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
        claim=bindparam("new_claim"),
    )
)
_TAKE_OVER = (
    update(ACTION).where(ACTION.c.id == bindparam("action_id")).values(claim=bindparam("new_claim"))
)
_FINISH = (
    update(ACTION)
    .where(
        ACTION.c.id == bindparam("action_id"),
        ACTION.c.claim == bindparam("held_claim"),
        ACTION.c.status == "executing",
    )
    .values(status=bindparam("status"), receipt=bindparam("receipt"))
)
_NOW = select(ACTION.c.status, ACTION.c.claim).where(ACTION.c.id == bindparam("action_id"))


def begin_execution(
    db: Database, *, action_id: str, approval_id: str, token: str, plant_time: float
) -> tuple[Action, bool]:
    """Claim an approved action for execution.

    Returns ``(action, True)`` when the caller must now send the command, or
    ``(action, False)`` when it was claimed before (a redelivery or restart): never send twice.
    An action claimed before and still ``executing`` is taken over: ``action.claim`` is the
    caller's new claim number (module doc), and the caller may send again with the action's
    idempotency key (the actuator answers a repeat from its first receipt). The caller
    records the outcome with :func:`finish_execution` and ``action.claim``.
    Raises ApprovalError for a forged, mismatched, unapproved or already-consumed approval,
    or an action that failed at an earlier attempt (its outcome may be unknown: one
    actuation per approval, so it is never sent again),
    NotFoundError for an unknown action.
    """
    with db.tx() as s:
        found = s.execute(_CLAIM, {"action_id": action_id}).first()
        if found is None:
            raise NotFoundError(f"no action {action_id!r}")
        action = Action(**found._mapping)
        if action.status == "executing":
            action.claim += 1  # the claim before can no longer record anything
            s.execute(_TAKE_OVER, {"action_id": action_id, "new_claim": action.claim})
            return action, False
        if action.status == "executed":
            return action, False
        if action.status == "failed":
            why = (action.receipt or {}).get("error") or (action.receipt or {}).get("detail")
            raise ApprovalError(
                f"action {action.id} failed at an earlier attempt"
                + (f" ({why})" if why else "")
                + f"; approval {approval_id} allows one actuation, so the command is not sent"
                " again: a person decides"
            )
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
        action.claim += 1
        ids = {
            "action_id": action_id,
            "approval_id": approval_id,
            "plant_time": plant_time,
            "new_claim": action.claim,
        }
        s.execute(_CONSUME, ids)
        s.execute(_EXECUTING, ids)
        action.status, action.approval_id, action.executed_at = "executing", approval_id, plant_time
        return action, True


def finish_execution(
    db: Database, action_id: str, *, claim: int, status: str, receipt: dict[str, Any]
) -> None:
    """Record the actuator's answer (``status`` ``executed`` or ``failed``, and its
    ``receipt``) for the caller's ``claim`` (``action.claim`` from :func:`begin_execution`).

    Raises ConflictError when that claim no longer holds the action (another executor took it
    over, or the outcome is recorded already): nothing is recorded. NotFoundError for an
    unknown action.
    """
    values = {"action_id": action_id, "held_claim": claim, "status": status, "receipt": receipt}
    with db.tx() as s:
        done = s.execute(_FINISH, values)
        if done.rowcount == 1:  # type: ignore[attr-defined]
            return
        now = s.execute(_NOW, {"action_id": action_id}).first()
        if now is None:
            raise NotFoundError(f"no action {action_id!r}")
        raise ConflictError(
            f"action {action_id} is {now.status} under claim {now.claim}: the outcome of claim "
            f"{claim} ({status}) is not recorded"
        )
