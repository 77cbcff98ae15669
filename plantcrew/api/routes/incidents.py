"""``/incidents``: list, get, timeline, and the live stream (server-sent events)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from plantcrew.api import sse
from plantcrew.api.auth import Principal, context, require, why_token_invalid
from plantcrew.api.problems import ApiError, problem_responses
from plantcrew.api.schemas import (
    ActionOut,
    ApprovalOut,
    IncidentDetail,
    IncidentOut,
    TimelineEvent,
)
from plantcrew.errors import NotFoundError
from plantcrew.store import Action, Approval, Incident, MessageRecord, Store
from plantcrew.store.access import Permission

router = APIRouter(tags=["incidents"], responses=problem_responses(401, 403, 422, 429))
Reader = Annotated[Principal, Depends(require(Permission.INCIDENTS_READ))]


def _list(
    store: Store, run_id: str | None, status: str | None, limit: int, offset: int
) -> list[IncidentOut]:
    with store.tx() as s:
        q = select(Incident)
        if run_id:
            q = q.where(col(Incident.run_id) == run_id)
        if status:
            q = q.where(col(Incident.status) == status)
        q = q.order_by(col(Incident.opened_at).desc(), col(Incident.id).desc())
        return [IncidentOut.of(i) for i in s.exec(q.offset(offset).limit(limit))]


@router.get("/incidents", response_model=list[IncidentOut], summary="List incidents")
def list_incidents(
    request: Request,
    _: Reader,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[IncidentOut]:
    """Incidents, newest first, optionally of one run or with one status."""
    return _list(context(request).store, run_id, status, limit, offset)


@router.get(
    "/incidents/stream",
    summary="Stream incident news (server-sent events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "SSE frames; each data line is a TimelineEvent",
        }
    },
)
async def stream_incidents(
    request: Request,
    _: Reader,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[
        int | None,
        Query(ge=0, le=10**18 - 1, description="replay from after this seq (0: everything)"),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000, description="end after N events")] = None,
    max_s: Annotated[
        float | None, Query(gt=0, le=86_400, description="end after this many seconds")
    ] = None,
    last_event_id: Annotated[
        str,
        Header(alias="Last-Event-ID", pattern=r"^\s*[0-9]{1,18}\s*$", description="resume after"),
    ] = "",
) -> StreamingResponse:
    """Incident state changes, approval requests and decisions, actions, reviews, as they are
    recorded. Reconnect with ``Last-Event-ID`` (sent by EventSource) to miss nothing. The
    stream ends when its token is revoked or expires (checked every ``sse_auth_recheck_s``),
    and when the service stops (SIGTERM), with a comment saying so."""
    after = since
    if last_event_id:
        after = int(last_event_id.strip())
    ctx = context(request)
    frames = sse.events(
        ctx.store,
        after=after,
        run_id=run_id,
        poll_s=ctx.settings.sse_poll_s,
        keepalive_s=ctx.settings.sse_keepalive_s,
        disconnected=request.is_disconnected,
        limit=limit,
        max_s=max_s,
        revoked=lambda: why_token_invalid(request),
        recheck_s=ctx.settings.sse_auth_recheck_s,
        retry_after_s=ctx.settings.unavailable_retry_s,
        stopping=ctx.stopping,
    )
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _detail(store: Store, incident_id: str) -> IncidentDetail:
    try:
        inc = store.get_incident(incident_id)
    except NotFoundError:
        raise ApiError(404, "Not found", f"no incident {incident_id!r}") from None
    with store.tx() as s:
        actions = list(s.exec(select(Action).where(col(Action.incident_id) == incident_id)))
        approvals = list(s.exec(select(Approval).where(col(Approval.incident_id) == incident_id)))
    by_id = {a.id: a for a in actions}
    return IncidentDetail(
        incident=IncidentOut.of(inc),
        actions=[ActionOut.of(a) for a in actions],
        approvals=[ApprovalOut.of(p, by_id.get(p.action_id)) for p in approvals],
    )


@router.get(
    "/incidents/{incident_id}",
    response_model=IncidentDetail,
    summary="Get an incident",
    responses=problem_responses(404),
)
def get_incident(request: Request, incident_id: str, _: Reader) -> IncidentDetail:
    """One incident with its actions and approvals."""
    return _detail(context(request).store, incident_id)


def _timeline(store: Store, incident_id: str) -> list[TimelineEvent]:
    try:
        store.get_incident(incident_id)
    except NotFoundError:
        raise ApiError(404, "Not found", f"no incident {incident_id!r}") from None
    with store.tx() as s:
        rows = s.exec(
            select(MessageRecord)
            .where(col(MessageRecord.correlation_id) == incident_id)
            .order_by(col(MessageRecord.seq))
        ).all()
    return [TimelineEvent(**sse.event_of(r)) for r in rows]


@router.get(
    "/incidents/{incident_id}/timeline",
    response_model=list[TimelineEvent],
    summary="An incident's timeline",
    responses=problem_responses(404),
)
async def incident_timeline(request: Request, incident_id: str, _: Reader) -> list[TimelineEvent]:
    """Every message of the incident's conversation, in order (approval tokens redacted)."""
    return await run_in_threadpool(_timeline, context(request).store, incident_id)
