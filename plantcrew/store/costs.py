"""What model calls cost: tokens and USD from the ``model_call`` table, per scope.

Every model call an agent makes is stored with its run, incident, agent id (``operator-1``),
model group, deployment, tokens, cost and the day it was made (``YYYY-MM-DD``, from the
time of the message that carried it). These queries sum them:

- :func:`cost_report`: the ``plantcrew costs`` tables (per deployment, incident, agent, day),
  optionally for one run and/or from a day on;
- :func:`spend_usd`: USD spent in one scope;
- :func:`budget_spend`: the spend a step's budget is checked against (its incident, its day,
  its role's day), for :meth:`plantcrew.llm.budget.Budgets.status`; the day's and the role's
  from their running sums in ``model_spend`` (:mod:`plantcrew.store.spend`).

An agent scope matches an agent id or a role: ``operator`` matches ``operator`` and every
``operator-<n>`` worker. Days compare as ISO strings, so ``since`` is a ``date`` or
``"YYYY-MM-DD"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Literal

from sqlalchemy import ColumnElement, bindparam, case, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from plantcrew.errors import PlantcrewError
from plantcrew.store.deferred import deferred
from plantcrew.store.spend import DAY_SCOPE, SPEND, agent_scope, pending
from plantcrew.store.tables import ModelCall

GroupBy = Literal["deployment", "incident", "agent", "day", "run", "model_group"]
_KEYS: dict[str, Any] = {
    "deployment": ModelCall.deployment,
    "incident": ModelCall.incident_id,
    "agent": ModelCall.agent,
    "day": ModelCall.day,
    "run": ModelCall.run_id,
    "model_group": ModelCall.model_group,
}


class BadDateError(PlantcrewError, ValueError):
    """A ``since`` day that is not ``YYYY-MM-DD``."""


@dataclass(frozen=True)
class CostRow:
    """Model calls summed over one key (a deployment, incident, agent, day...).

    ``ok`` calls gave a usable answer; ``failed`` did not (every deployment failed, or the
    output was rejected); ``fallback`` were served by a deployment other than the group's
    first; ``repaired`` belong to a repair turn; ``degraded`` ran on the playbook because the
    models failed or a budget was spent. Tokens are the provider's counts; cost in USD.
    """

    key: str
    calls: int
    ok: int
    failed: int
    fallback: int
    repaired: int
    degraded: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    models: str = ""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CostReport:
    """The ``plantcrew costs`` report: a total and the rows per deployment, incident, agent
    and day, for ``run_id`` (None: every run) from ``since`` on (None: from the start)."""

    run_id: str | None
    since: str | None
    total: CostRow
    by_deployment: list[CostRow] = field(default_factory=list)
    by_incident: list[CostRow] = field(default_factory=list)
    by_agent: list[CostRow] = field(default_factory=list)
    by_day: list[CostRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (rows as objects with a ``tokens`` total)."""

        def row(r: CostRow) -> dict[str, Any]:
            return {**asdict(r), "tokens": r.tokens, "cost_usd": round(r.cost_usd, 8)}

        return {
            "run_id": self.run_id,
            "since": self.since,
            "total": row(self.total),
            "by_deployment": [row(r) for r in self.by_deployment],
            "by_incident": [row(r) for r in self.by_incident],
            "by_agent": [row(r) for r in self.by_agent],
            "by_day": [row(r) for r in self.by_day],
        }


def day_text(day: date | str | None) -> str | None:
    """``"YYYY-MM-DD"`` for a date or such a string; BadDateError for anything else."""
    if day is None:
        return None
    if isinstance(day, date):
        return day.isoformat()
    try:
        return date.fromisoformat(day).isoformat()
    except (TypeError, ValueError):
        raise BadDateError(f"not a day (YYYY-MM-DD): {day!r}") from None


def agent_matches(agent: str) -> ColumnElement[bool]:
    """SQL condition: the call's agent is ``agent`` or one of its workers ``<agent>-<n>``."""
    return or_(
        col(ModelCall.agent) == agent, col(ModelCall.agent).startswith(f"{agent}-", autoescape=True)
    )


def _where(
    *,
    run_id: str | None = None,
    incident_id: str | None = None,
    agent: str | None = None,
    day: date | str | None = None,
    since: date | str | None = None,
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if run_id is not None:
        conds.append(col(ModelCall.run_id) == run_id)
    if incident_id is not None:
        conds.append(col(ModelCall.incident_id) == incident_id)
    if agent is not None:
        conds.append(agent_matches(agent))
    if day is not None:
        conds.append(col(ModelCall.day) == day_text(day))
    if since is not None:
        conds.append(col(ModelCall.day) >= day_text(since))
    return conds


def _count_if(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _aggregates() -> list[Any]:
    return [
        func.count(),
        _count_if(col(ModelCall.ok).is_(True)),
        _count_if(col(ModelCall.ok).is_(False)),
        _count_if(col(ModelCall.fallback).is_(True)),
        _count_if(col(ModelCall.repaired).is_(True)),
        _count_if(col(ModelCall.degraded_reason).is_not(None)),
        func.coalesce(func.sum(ModelCall.prompt_tokens), 0),
        func.coalesce(func.sum(ModelCall.completion_tokens), 0),
        func.coalesce(func.sum(ModelCall.cost_usd), 0.0),
    ]


def _row(key: str, values: Sequence[Any], models: str = "") -> CostRow:
    calls, ok, failed, fallback, repaired, degraded, prompt, completion, cost = values
    return CostRow(
        key=key,
        calls=int(calls),
        ok=int(ok),
        failed=int(failed),
        fallback=int(fallback),
        repaired=int(repaired),
        degraded=int(degraded),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cost_usd=float(cost),
        models=models,
    )


def cost_rows(
    s: Session, by: GroupBy, *, run_id: str | None = None, since: date | str | None = None
) -> list[CostRow]:
    """Model calls summed per ``by`` (rows ordered by key; a missing key reads ``-``).

    Raises BadDateError for a ``since`` that is not a day.
    """
    key = _KEYS[by]
    stmt = select(key, func.min(ModelCall.model), func.max(ModelCall.model), *_aggregates())
    for cond in _where(run_id=run_id, since=since):
        stmt = stmt.where(cond)
    stmt = stmt.group_by(key).order_by(key)
    out = []
    for k, low, high, *values in s.exec(stmt).all():
        models = low if low == high else f"{low}, ..., {high}"
        out.append(_row("-" if k is None else str(k), values, models or ""))
    return out


def cost_total(
    s: Session,
    *,
    run_id: str | None = None,
    incident_id: str | None = None,
    agent: str | None = None,
    day: date | str | None = None,
    since: date | str | None = None,
) -> CostRow:
    """Every model call of the scope given by the filters, summed (key ``total``)."""
    stmt = select(*_aggregates())
    for cond in _where(run_id=run_id, incident_id=incident_id, agent=agent, day=day, since=since):
        stmt = stmt.where(cond)
    return _row("total", s.exec(stmt).one())


def spend_usd(s: Session, **scope: Any) -> float:
    """USD spent by the model calls of a scope (``run_id``, ``incident_id``, ``agent``,
    ``day``, ``since``; see :func:`cost_total`)."""
    return cost_total(s, **scope).cost_usd


def cost_report(
    s: Session, *, run_id: str | None = None, since: date | str | None = None
) -> CostReport:
    """The ``plantcrew costs`` report (see :class:`CostReport`); BadDateError for a bad day."""
    since_text = day_text(since)
    return CostReport(
        run_id=run_id,
        since=since_text,
        total=cost_total(s, run_id=run_id, since=since_text),
        by_deployment=cost_rows(s, "deployment", run_id=run_id, since=since_text),
        by_incident=cost_rows(s, "incident", run_id=run_id, since=since_text),
        by_agent=cost_rows(s, "agent", run_id=run_id, since=since_text),
        by_day=cost_rows(s, "day", run_id=run_id, since=since_text),
    )


_MC = ModelCall.__table__  # type: ignore[attr-defined]
_DAY: Any = bindparam("day")


def _spent_in(scope: str) -> Any:
    row = sa_select(SPEND.c.usd).where(SPEND.c.day == _DAY, SPEND.c.scope == bindparam(scope))
    return func.coalesce(row.scalar_subquery(), 0.0)


# the three scopes of a step's budget in one statement, built once (the Coordinator runs it
# for every reasoning step it dispatches): the incident's calls through the index on
# incident_id, the day's and the role's running spend as one row each (plantcrew.store.spend)
_BUDGET_SPEND = sa_select(
    func.coalesce(
        sa_select(func.sum(_MC.c.cost_usd))
        .where(_MC.c.incident_id == bindparam("incident_id"))
        .scalar_subquery(),
        0.0,
    ),
    _spent_in("day_scope"),
    _spent_in("agent_scope"),
)


def budget_spend(
    s: Session, *, incident_id: str | None, day: date | str, agent: str | None = None
) -> dict[str, float]:
    """USD spent so far by the scopes of a step's budget.

    Returns ``{"incident": ..., "day": ..., "agent": ...}``: the calls of ``incident_id``
    (0.0 when None), of ``day`` across every run, and of ``agent`` (a role, matching its
    workers ``<role>-<n>``, or an agent id) on ``day`` (0.0 when None), those written in
    ``s``'s transaction included. Pass it to ``Budgets.status(spend, agent=...)``. One query:
    the day's and the agent's spend are one ``model_spend`` row each
    (:mod:`plantcrew.store.spend`). Raises BadDateError for a ``day`` that is not a day.
    """
    on = day_text(day) or ""
    scope = agent_scope(agent or "")
    incident, on_day, of_agent = s.execute(
        _BUDGET_SPEND,
        {"incident_id": incident_id, "day": on, "day_scope": DAY_SCOPE, "agent_scope": scope},
    ).one()  # fmt: skip
    work = deferred(s)
    queued = work.spend if work is not None else {}
    return {
        "incident": float(incident) if incident_id else 0.0,
        "day": float(on_day) + pending(queued, on, DAY_SCOPE),
        "agent": float(of_agent) + pending(queued, on, scope) if agent else 0.0,
    }


__all__ = [
    "BadDateError",
    "CostReport",
    "CostRow",
    "agent_matches",
    "budget_spend",
    "cost_report",
    "cost_rows",
    "cost_total",
    "day_text",
    "spend_usd",
]
