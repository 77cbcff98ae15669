"""A person's vote on an approval, checked before it is stored.

The API (``POST /approvals/{id}/approve|reject``) and the CLI (``plantcrew approvals
approve|reject``) apply these checks, so a vote that could never count is refused at once,
saying why, instead of being stored for the Coordinator. The Coordinator checks the role and
the deadline again when it applies a vote (a vote may race the deadline), but a vote on an
approval that is no longer pending it drops without a word.
"""

from __future__ import annotations

from sqlmodel import col, func, select

from plantcrew.crews.clocks import run_plant_time
from plantcrew.errors import VoteRefused
from plantcrew.store.store import Store
from plantcrew.store.tables import Approval, ApprovalVote, MessageRecord, Run


def plant_now(store: Store, run_id: str) -> float | None:
    """The plant seconds run ``run_id`` has surely reached (None: no such run), by
    :func:`plantcrew.crews.clocks.run_plant_time` with the latest plant time of its recorded
    messages. The Coordinator's clock is never behind it, so a deadline this is past is past
    for the Coordinator too."""
    with store.tx() as s:
        run = s.get(Run, run_id)
        if run is None:
            return None
        seen = s.exec(
            select(func.max(MessageRecord.plant_time)).where(col(MessageRecord.run_id) == run_id)
        ).one()
        return run_plant_time(run.started_at, run.config, run.plant_time, float(seen or 0.0))


def check_open(store: Store, appr: Approval) -> None:
    """Raise :class:`VoteRefused` (not ``forbidden``) when ``appr`` takes no more votes: it
    is not pending, or its run has surely reached a plant time past its deadline
    (:func:`plant_now`; the timeout's safe default then holds)."""
    if appr.status != "pending":
        raise VoteRefused(f"approval {appr.id} is {appr.status}, not pending")
    now = plant_now(store, appr.run_id) if appr.deadline_at is not None else None
    if now is not None and appr.deadline_at is not None and now > appr.deadline_at:
        raise VoteRefused(
            f"approval {appr.id} closed at its deadline, plant {appr.deadline_at:g} s; run "
            f"{appr.run_id} is at plant {now:g} s: too late to decide (the timeout's safe "
            "default holds: nothing actuates)"
        )


def check_voter(store: Store, appr: Approval, approver: str, role: str) -> None:
    """Raise :class:`VoteRefused` when ``approver``, in plant role ``role``, may not vote on
    ``appr`` now: ``forbidden`` when the approval does not allow the role; not forbidden when
    the person has decided on it already or their vote still waits for the Coordinator."""
    if role not in appr.approver_roles:
        raise VoteRefused(
            f"plant role {role!r} may not decide class-{appr.hazard_class} approval "
            f"{appr.id}; allowed: {', '.join(appr.approver_roles)}",
            forbidden=True,
        )
    if any(d.get("approver") == approver for d in appr.decisions):
        raise VoteRefused(f"{approver} has decided on {appr.id} already")
    with store.tx() as s:
        waiting = s.exec(
            select(ApprovalVote).where(
                col(ApprovalVote.approval_id) == appr.id,
                col(ApprovalVote.approver) == approver,
                col(ApprovalVote.processed).is_(False),
            )
        ).first()
    if waiting is not None:
        raise VoteRefused(f"{approver}'s decision on {appr.id} waits")


def submit_vote(
    store: Store, approval_id: str, *, approver: str, role: str, approved: bool, reason: str = ""
) -> ApprovalVote:
    """Store ``approver``'s decision on ``approval_id`` for the Coordinator to apply, after
    :func:`check_open` and :func:`check_voter`. Raises NotFoundError for no such approval,
    VoteRefused for a vote that could never count (nothing is stored then)."""
    appr = store.get_approval(approval_id)
    check_open(store, appr)
    check_voter(store, appr, approver, role)
    return store.cast_vote(
        approval_id, approver=approver, role=role, approved=approved, reason=reason
    )
