"""Model budgets: the limits of ``config/models.yaml`` (``budgets:``) and the spend against them.

Shape (all amounts in USD; every limit optional, none set: no budget)::

    budgets:
      per_incident_usd: 0.50     # every model call of one incident
      per_day_usd: 20.0          # every model call of one day (the day recorded with each call)
      per_agent_day_usd:         # per role (diagnostic, operator, safety, reviewer) and day
        reviewer: 2.0
      warn_at: 0.8               # fraction of a limit that raises a warning

Agents are stateless and keep no database, so the Coordinator reads the spend recorded with
each model call (:func:`plantcrew.store.costs.budget_spend`: the incident's ``model_call``
rows, the day's and the role's running sums in ``model_spend``) when it dispatches a task,
turns it into a :class:`BudgetStatus` (:meth:`Budgets.status`) and sends it in the task's input
(``task.input["budget"]``); :func:`plantcrew.llm.reason.reason` reads it back with
:func:`budget_of`. A scope whose spend reaches ``warn_at`` of its limit is at ``warn`` (the step
still uses the models; a warning is logged); a scope whose spend reaches its limit is
``exhausted`` and the step runs on the playbook model only, its call saying
``"budget: <scope> spent $X of $Y"``. A limit of 0 makes a scope playbook-only.

The status is a snapshot taken at dispatch: incidents running in parallel may each spend one
step's worth beyond a limit before the next dispatch sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    field_validator,
)

Level = Literal["ok", "warn", "exhausted"]
BUDGET_ROLES = ("diagnostic", "operator", "safety", "reviewer")
"""The roles whose steps call models (the keys of ``per_agent_day_usd``)."""
_RANK: dict[str, int] = {"ok": 0, "warn": 1, "exhausted": 2}
_EPSILON_USD = 1e-9


def usd(amount: float) -> str:
    """``$0.0123``: an amount in USD with four decimals (model calls cost fractions of a cent)."""
    return f"${amount:.4f}"


class Budgets(BaseModel):
    """The ``budgets:`` section of ``models.yaml`` (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_incident_usd: float | None = Field(None, ge=0, allow_inf_nan=False)
    per_day_usd: float | None = Field(None, ge=0, allow_inf_nan=False)
    per_agent_day_usd: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        {}, description="role (diagnostic, operator, safety, reviewer) -> USD per day"
    )
    warn_at: float = Field(0.8, gt=0, le=1)

    @field_validator("per_agent_day_usd")
    @classmethod
    def _roles_only(cls, limits: dict[str, float]) -> dict[str, float]:
        # the Coordinator checks a step's budget when it dispatches it, before any agent has
        # it: by role. Any other key (an agent id, a typo) would never apply.
        unknown = sorted(set(limits) - set(BUDGET_ROLES))
        if unknown:
            raise ValueError(
                f"unknown role(s) {unknown}; per_agent_day_usd is per role: "
                + ", ".join(BUDGET_ROLES)
            )
        return limits

    @property
    def any(self) -> bool:
        """True when at least one limit is set."""
        return (
            self.per_incident_usd is not None
            or self.per_day_usd is not None
            or bool(self.per_agent_day_usd)
        )

    def status(self, spend: Mapping[str, float], *, agent: str | None = None) -> BudgetStatus:
        """The status of ``spend`` against these limits.

        ``spend`` maps ``"incident"``, ``"day"`` and ``"agent"`` to USD spent (missing: 0; see
        :func:`plantcrew.store.costs.budget_spend`); ``agent`` names the role whose per-agent limit
        applies. Scopes without a limit are left out.
        """
        scopes: list[ScopeSpend] = []
        if self.per_incident_usd is not None:
            scopes.append(
                ScopeSpend(
                    scope="incident",
                    spent_usd=spend.get("incident", 0.0),
                    limit_usd=self.per_incident_usd,
                    warn_at=self.warn_at,
                )
            )
        if self.per_day_usd is not None:
            scopes.append(
                ScopeSpend(
                    scope="day",
                    spent_usd=spend.get("day", 0.0),
                    limit_usd=self.per_day_usd,
                    warn_at=self.warn_at,
                )
            )
        if agent is not None and agent in self.per_agent_day_usd:
            scopes.append(
                ScopeSpend(
                    scope=f"agent {agent} today",
                    spent_usd=spend.get("agent", 0.0),
                    limit_usd=self.per_agent_day_usd[agent],
                    warn_at=self.warn_at,
                )
            )
        return BudgetStatus(scopes=scopes)


class ScopeSpend(BaseModel):
    """Spend against one limit: ``scope`` (``incident``, ``day``, ``agent <role> today``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    scope: str = Field(min_length=1, max_length=100)
    spent_usd: float = Field(ge=0, allow_inf_nan=False)
    limit_usd: float = Field(ge=0, allow_inf_nan=False)
    warn_at: float = Field(0.8, gt=0, le=1)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def level(self) -> Level:
        """``exhausted`` at or above the limit, ``warn`` at or above ``warn_at`` of it."""
        spent = self.spent_usd + _EPSILON_USD  # 0.04 is 80 % of 0.05, whatever floats say
        if spent >= self.limit_usd:
            return "exhausted"
        if spent >= self.warn_at * self.limit_usd:
            return "warn"
        return "ok"

    def text(self) -> str:
        """``"day spent $0.8500 of $1.0000"``."""
        return f"{self.scope} spent {usd(self.spent_usd)} of {usd(self.limit_usd)}"


class BudgetStatus(BaseModel):
    """The spend of a step's scopes against their limits, as carried in ``task.input``.

    ``level`` is computed (the worst scope's), never read from input, so a task cannot claim
    a budget it does not have. ``error`` says the status could not be read: it counts as
    exhausted (fail safe: no spending on an unknown budget).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    scopes: list[ScopeSpend] = []
    error: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def level(self) -> Level:
        """The worst level of the scopes (``exhausted`` when ``error`` is set)."""
        if self.error is not None:
            return "exhausted"
        return max((s.level for s in self.scopes), key=_RANK.__getitem__, default="ok")

    def worst(self) -> ScopeSpend | None:
        """The scope with the worst level (the highest share of its limit among equals)."""
        if not self.scopes:
            return None

        def key(s: ScopeSpend) -> tuple[int, float]:
            share = s.spent_usd / s.limit_usd if s.limit_usd > 0 else float("inf")
            return _RANK[s.level], share

        return max(self.scopes, key=key)

    @property
    def reason(self) -> str | None:
        """``"budget: incident spent $0.0500 of $0.0500"`` when not ok, else None."""
        if self.error is not None:
            return f"budget: {self.error}"
        worst = self.worst()
        if worst is None or worst.level == "ok":
            return None
        return f"budget: {worst.text()}"

    def after(self, cost_usd: float) -> BudgetStatus:
        """This status with ``cost_usd`` more spent in every scope (a step's own calls)."""
        if cost_usd <= 0:
            return self
        return self.model_copy(
            update={
                "scopes": [
                    s.model_copy(update={"spent_usd": s.spent_usd + cost_usd}) for s in self.scopes
                ]
            }
        )


def budget_of(task_input: Mapping[str, Any]) -> BudgetStatus | None:
    """The :class:`BudgetStatus` in ``task_input["budget"]``, or None when there is none.

    A budget that does not validate gives a status with ``error`` set (exhausted: the step
    runs on the playbook), never an exception.
    """
    raw = task_input.get("budget")
    if raw is None:
        return None
    try:
        return BudgetStatus.model_validate(raw)
    except ValidationError as exc:
        return BudgetStatus(
            error=f"unreadable budget in the task input ({exc.error_count()} error(s))"
        )


__all__ = ["BudgetStatus", "Budgets", "Level", "ScopeSpend", "budget_of", "usd"]
