"""``/agents``, ``/models`` and ``/me``: the crew's health as the console shows it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select as sa_select
from sqlmodel import col, func

from plantcrew.api.auth import Principal, context, require
from plantcrew.api.problems import problem_responses
from plantcrew.api.schemas import AgentOut, DeploymentOut, MeOut, ModelGroupOut
from plantcrew.store import ModelCall, Store
from plantcrew.store.access import Permission

router = APIRouter(tags=["crew"], responses=problem_responses(401, 403, 422, 429))
Reader = Annotated[Principal, Depends(require(Permission.AGENTS_READ))]


@router.get("/agents", response_model=list[AgentOut], summary="Agents and their heartbeats")
def list_agents(request: Request, _: Reader) -> list[AgentOut]:
    """Every agent heard on the bus, or recorded by a Coordinator process in the database:
    role, capabilities, load, heartbeat age, liveness."""
    ctx = context(request)
    return [AgentOut(**a) for a in ctx.agents.snapshot(ctx.store.agents())]


def _stats(store: Store) -> dict[str, dict[str, Any]]:
    with store.tx() as s:
        rows = s.execute(
            sa_select(
                *_columns(
                    ModelCall.deployment,
                    ModelCall.ok,
                    ModelCall.fallback,
                    func.count(),
                    func.coalesce(func.sum(ModelCall.prompt_tokens), 0),
                    func.coalesce(func.sum(ModelCall.completion_tokens), 0),
                    func.coalesce(func.sum(ModelCall.cost_usd), 0.0),
                    func.coalesce(func.sum(ModelCall.latency_ms), 0.0),
                )
            ).group_by(col(ModelCall.deployment), col(ModelCall.ok), col(ModelCall.fallback))
        ).all()
    out: dict[str, dict[str, Any]] = {}
    for dep, ok, fb, n, pt, ct, usd, ms in rows:
        d = out.setdefault(
            dep,
            {
                "calls": 0,
                "failures": 0,
                "fallbacks": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost_usd": 0.0,
                "latency_ms": 0.0,
            },
        )
        d["calls"] += n
        d["failures"] += 0 if ok else n
        d["fallbacks"] += n if fb else 0
        d["prompt_tokens"] += int(pt)
        d["completion_tokens"] += int(ct)
        d["cost_usd"] += float(usd)
        d["latency_ms"] += float(ms)
    return out


@router.get("/models", response_model=list[ModelGroupOut], summary="Model deployments")
def list_models(request: Request, _: Reader) -> list[ModelGroupOut]:
    """Model groups and their deployments in failover order (active or skipped, and why),
    with the recorded calls, failures, fallbacks, tokens, cost and mean latency of each."""
    ctx = context(request)
    router_ = ctx.router
    if router_ is None:
        return []
    stats = _stats(ctx.store)
    groups = []
    for name in router_.groups:
        cfg = router_.config.groups[name]
        deps = []
        for dep in router_.deployments(name):
            deps.append(_deployment(dep.name, dep.model, True, None, dep.order, stats))
        for skipped, why in router_.config.skipped(name):
            model = next((d.model for d in cfg.deployments if d.name == skipped), "")
            deps.append(_deployment(skipped, model, False, why, None, stats))
        groups.append(ModelGroupOut(name=name, description=cfg.description, deployments=deps))
    return groups


def _deployment(
    name: str | None,
    model: str,
    active: bool,
    why: str | None,
    order: int | None,
    stats: dict[str, dict[str, Any]],
) -> DeploymentOut:
    st = stats.get(name or "", {})
    calls = int(st.get("calls", 0))
    return DeploymentOut(
        name=name or model,
        model=model,
        active=active,
        skipped_reason=why,
        order=order,
        calls=calls,
        failures=int(st.get("failures", 0)),
        fallbacks=int(st.get("fallbacks", 0)),
        prompt_tokens=int(st.get("prompt_tokens", 0)),
        completion_tokens=int(st.get("completion_tokens", 0)),
        cost_usd=round(float(st.get("cost_usd", 0.0)), 6),
        mean_latency_ms=round(st["latency_ms"] / calls, 2) if calls else None,
    )


@router.get("/me", response_model=MeOut, summary="Who am I")
def me(principal: Annotated[Principal, Depends(require(Permission.INCIDENTS_READ))]) -> MeOut:
    """The caller's token: name, access role, plant role and permissions."""
    return MeOut(
        token_id=principal.token_id,
        name=principal.name,
        role=principal.role,
        approver_role=principal.approver_role,
        permissions=sorted(p.value for p in principal.permissions),
    )


def _columns(*cols: Any) -> list[Any]:
    """Columns for a wide ``select`` (SQLAlchemy's typed overloads stop at a few)."""
    return list(cols)
