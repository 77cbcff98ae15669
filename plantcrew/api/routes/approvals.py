"""``/approvals``: what waits for people, and their decisions.

The person and their plant role come from the API token, never from the body. A decision is
stored as a vote (``Store.cast_vote``); the Coordinator applies it on its next tick and checks
the role and the deadline again (a vote may race the deadline). A vote the service can see is
too late (the run's plant time is past the approval's deadline) is refused here with 409.
An approval grants exactly one actuation: the crew's approval token names the action, device
and parameters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from plantcrew.api.auth import Principal, context, require
from plantcrew.api.idempotency import KEY_PATTERN, idempotent
from plantcrew.api.problems import ApiError, problem_responses
from plantcrew.api.schemas import ApprovalOut, VoteIn, VoteOut
from plantcrew.errors import NotFoundError, VoteRefused
from plantcrew.store import Action, Approval, Store
from plantcrew.store.access import Permission
from plantcrew.store.votes import check_open, check_voter

router = APIRouter(tags=["approvals"], responses=problem_responses(401, 403, 422, 429))
Reader = Annotated[Principal, Depends(require(Permission.APPROVALS_READ))]
Decider = Annotated[Principal, Depends(require(Permission.APPROVALS_DECIDE))]
IdemKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", pattern=KEY_PATTERN, description="retry-safe request key"),
]


def _list(
    store: Store, status: str | None, run_id: str | None, limit: int, offset: int
) -> list[ApprovalOut]:
    approvals = store.approvals(status=status, run_id=run_id, limit=limit, offset=offset)
    with store.tx() as s:
        ids = [a.action_id for a in approvals]
        actions = {a.id: a for a in s.exec(select(Action).where(col(Action.id).in_(ids)))}
    return [ApprovalOut.of(a, actions.get(a.action_id)) for a in approvals]


@router.get("/approvals", response_model=list[ApprovalOut], summary="List approvals")
def list_approvals(
    request: Request,
    _: Reader,
    status: Annotated[str | None, Query(pattern="^(pending|approved|rejected|expired)$")] = None,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[ApprovalOut]:
    """Approvals (``status=pending`` for what waits), oldest request first, a page at a time."""
    return _list(context(request).store, status, run_id, limit, offset)


def _get(store: Store, approval_id: str) -> ApprovalOut:
    try:
        appr = store.get_approval(approval_id)
    except NotFoundError:
        raise ApiError(404, "Not found", f"no approval {approval_id!r}") from None
    with store.tx() as s:
        action = s.get(Action, appr.action_id)
    return ApprovalOut.of(appr, action)


@router.get(
    "/approvals/{approval_id}",
    response_model=ApprovalOut,
    summary="Get an approval",
    responses=problem_responses(404),
)
def get_approval(request: Request, approval_id: str, _: Reader) -> ApprovalOut:
    """One approval with its action."""
    return _get(context(request).store, approval_id)


def _refused(exc: VoteRefused) -> ApiError:
    """A vote :mod:`plantcrew.store.votes` refused, as a problem: 403 for a role the approval
    does not allow, else 409."""
    if exc.forbidden:
        return ApiError(403, "Forbidden", str(exc))
    return ApiError(409, "Conflict", str(exc))


def _vote(
    store: Store, principal: Principal, approval_id: str, approved: bool, reason: str
) -> VoteOut:
    try:
        appr: Approval = store.get_approval(approval_id)
    except NotFoundError:
        raise ApiError(404, "Not found", f"no approval {approval_id!r}") from None
    try:
        check_open(store, appr)
    except VoteRefused as exc:
        raise _refused(exc) from None
    role = principal.approver_role
    if role is None:
        raise ApiError(
            403,
            "Forbidden",
            f"token {principal.token_id} has no plant role; this approval needs one of "
            f"{', '.join(appr.approver_roles)}",
        )
    try:
        check_voter(store, appr, principal.name, role)
    except VoteRefused as exc:
        raise _refused(exc) from None
    vote = store.cast_vote(
        approval_id, approver=principal.name, role=role, approved=approved, reason=reason
    )
    store.audit(
        time=datetime.now(UTC),
        actor=principal.name,
        kind="approval.vote_submitted",
        run_id=appr.run_id,
        incident_id=appr.incident_id,
        data={
            "approval_id": approval_id,
            "approved": approved,
            "role": role,
            "token_id": principal.token_id,
            "via": "api",
            "reason": reason,
        },
    )
    return VoteOut(
        approval_id=approval_id,
        approver=principal.name,
        role=role,
        approved=approved,
        reason=reason,
        vote_seq=vote.seq or 0,
        note="submitted; the Coordinator applies it at its next tick",
    )


async def _decide(
    request: Request,
    principal: Principal,
    approval_id: str,
    approved: bool,
    body: VoteIn | None,
    key: str | None,
) -> JSONResponse:
    reason = body.reason if body is not None else ""
    store = context(request).store

    async def produce() -> tuple[int, VoteOut]:
        out = await run_in_threadpool(_vote, store, principal, approval_id, approved, reason)
        return 202, out

    return await idempotent(request, principal, key, produce)


_DECIDE_RESPONSES = {
    **problem_responses(400, 404, 409, 422),
    202: {"model": VoteOut, "description": "decision submitted"},
}


@router.post(
    "/approvals/{approval_id}/approve",
    status_code=202,
    response_model=VoteOut,
    summary="Approve an action",
    responses=_DECIDE_RESPONSES,
)
async def approve(
    request: Request,
    approval_id: str,
    principal: Decider,
    body: Annotated[VoteIn | None, Body()] = None,
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    """Approve as the token's holder, in the token's plant role (which the approval must
    allow). With enough approvals the action runs, once."""
    return await _decide(request, principal, approval_id, True, body, idempotency_key)


@router.post(
    "/approvals/{approval_id}/reject",
    status_code=202,
    response_model=VoteOut,
    summary="Refuse an action",
    responses=_DECIDE_RESPONSES,
)
async def reject(
    request: Request,
    approval_id: str,
    principal: Decider,
    body: Annotated[VoteIn | None, Body()] = None,
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    """Refuse as the token's holder: nothing actuates, the incident goes to a person."""
    return await _decide(request, principal, approval_id, False, body, idempotency_key)
