"""``/runs``: runs, and a run's replay export (its conversation log in order)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from plantcrew.api.auth import Principal, context, require
from plantcrew.api.problems import ApiError, problem_responses
from plantcrew.api.redact import redact
from plantcrew.api.schemas import ActionOut, ApprovalOut, IncidentOut, RunExport, RunOut
from plantcrew.errors import NotFoundError
from plantcrew.store import Store
from plantcrew.store.access import Permission

router = APIRouter(tags=["runs"], responses=problem_responses(401, 403, 422, 429))
Reader = Annotated[Principal, Depends(require(Permission.RUNS_READ))]
Exporter = Annotated[Principal, Depends(require(Permission.RUNS_EXPORT))]


@router.get("/runs", response_model=list[RunOut], summary="List runs")
def list_runs(
    request: Request,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[RunOut]:
    """Runs, newest first, a page at a time."""
    return [RunOut.of(r) for r in context(request).store.runs(limit, offset)]


@router.get(
    "/runs/{run_id}", response_model=RunOut, summary="Get a run", responses=problem_responses(404)
)
def get_run(request: Request, run_id: str, _: Reader) -> RunOut:
    """One run."""
    try:
        return RunOut.of(context(request).store.get_run(run_id))
    except NotFoundError:
        raise ApiError(404, "Not found", f"no run {run_id!r}") from None


def export_run(store: Store, run_id: str) -> RunExport:
    """The replay export of a run: the run, its incidents, actions, approvals and every
    message of its conversation log (envelope and payload, tokens redacted) with ``seq`` and
    ``plant_time``, in order. Raises NotFoundError for an unknown run."""
    run = store.get_run(run_id)
    actions = store.actions(run_id=run_id)
    by_id = {a.id: a for a in actions}
    messages = []
    for rec in store.messages(run_id):
        body = redact(json.loads(rec.body))
        messages.append({"seq": rec.seq, "plant_time": rec.plant_time, "message": body})
    return RunExport(
        run=RunOut.of(run),
        incidents=[IncidentOut.of(i) for i in store.incidents(run_id)],
        actions=[ActionOut.of(a) for a in actions],
        approvals=[
            ApprovalOut.of(p, by_id.get(p.action_id)) for p in store.approvals(run_id=run_id)
        ],
        messages=messages,
    )


@router.get(
    "/runs/{run_id}/export",
    response_model=RunExport,
    summary="Export a run for replay",
    responses=problem_responses(404),
)
async def export(request: Request, run_id: str, _: Exporter) -> RunExport:
    """The run's replay export (``format: plantcrew.replay/1``)."""
    try:
        return await run_in_threadpool(export_run, context(request).store, run_id)
    except NotFoundError:
        raise ApiError(404, "Not found", f"no run {run_id!r}") from None
