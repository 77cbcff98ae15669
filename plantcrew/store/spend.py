"""The running spend of model calls: ``model_spend``, one row per day and budget scope.

A step's budget (:func:`plantcrew.store.costs.budget_spend`) is checked against the spend of
its day and of its role on that day. Summing that day's ``model_call`` rows for every step
cost time in proportion to the calls of the day; instead each ``model_call`` row written
(:func:`plantcrew.store.store.add_model_calls`) adds its cost to the ``model_spend`` rows of
its scopes, in the same transaction, and the check reads those rows.

Scopes of a call made on ``day`` by agent ``a``:

- ``day``: every call of the day;
- ``agent:<p>`` for ``p`` = ``a`` and every prefix of ``a`` that ends before a ``-``
  (``operator-host-7`` counts in ``agent:operator``, ``agent:operator-host`` and
  ``agent:operator-host-7``; the empty prefix of ``-x`` is left out). A query for agent ``q``
  then reads the one row ``agent:<q>``, which sums exactly the calls whose agent is ``q`` or
  starts with ``q-``: a role and its workers ``<role>-<n>``, as the ``LIKE`` over
  ``model_call`` matched them (:func:`plantcrew.store.costs.agent_matches`), case included.

The rows are added to with ``INSERT ... ON CONFLICT (day, scope) DO UPDATE SET usd = usd +
excluded.usd, calls = calls + excluded.calls`` on SQLite and PostgreSQL: concurrent writers
never lose an update (PostgreSQL locks the row and adds to its newest version; SQLite has one
writer at a time). In a transaction of ``Database.tx`` the additions wait for its end
(:mod:`plantcrew.store.deferred`), so the day's row, which every call writes, is locked only
from there to the commit. They are written together, in one order (by day, its ``day`` row
first, then its agent rows by name), so two transactions never wait for each other's
``model_spend`` rows. Readers in the same transaction add what it has queued
(:func:`pending`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlmodel import Session

from plantcrew.store.rows import upsert
from plantcrew.store.tables import ModelSpend

DAY_SCOPE = "day"
"""The scope of every call of a day."""

SPEND = ModelSpend.__table__  # type: ignore[attr-defined]

Deltas = dict[tuple[str, str], tuple[float, int]]
"""``(day, scope) -> (usd, calls)`` to add to ``model_spend``."""

_ADD: dict[str, Any] = {}


def agent_scope(agent: str) -> str:
    """The scope of agent (or role) ``agent``: ``agent:<agent>``."""
    return f"agent:{agent}"


def scopes_of(agent: str) -> list[str]:
    """The scopes a call by ``agent`` counts in: ``day`` and the agent scopes of ``agent``
    and of each prefix of it that ends before a ``-`` (see module doc)."""
    parts = agent.split("-")
    prefixes = ("-".join(parts[:n]) for n in range(1, len(parts) + 1))
    return [DAY_SCOPE, *(agent_scope(p) for p in prefixes if p)]


def deltas_of(calls: Iterable[tuple[str, str, float]], into: Deltas | None = None) -> Deltas:
    """What ``calls`` (``(day, agent, cost_usd)`` each) add to each ``(day, scope)``,
    added to ``into`` (changed in place) when given."""
    out: Deltas = {} if into is None else into
    for day, agent, cost in calls:
        for scope in scopes_of(agent):
            usd, n = out.get((day, scope), (0.0, 0))
            out[(day, scope)] = (usd + cost, n + 1)
    return out


def _add_stmt(dialect: str) -> Any:
    stmt = _ADD.get(dialect)
    if stmt is None:
        ins = upsert(dialect, SPEND)
        stmt = _ADD[dialect] = ins.on_conflict_do_update(
            index_elements=[SPEND.c.day, SPEND.c.scope],
            set_={"usd": SPEND.c.usd + ins.excluded.usd,
                  "calls": SPEND.c.calls + ins.excluded.calls},
        )  # fmt: skip
    return stmt


def add_spend(s: Session, deltas: Mapping[tuple[str, str], tuple[float, int]]) -> None:
    """Add ``deltas`` to ``model_spend`` now, in ``s``'s transaction: one upsert per row, each
    day's ``day`` row first (see module doc)."""
    if not deltas:
        return
    keys = sorted(deltas, key=lambda k: (k[0], k[1] != DAY_SCOPE, k[1]))
    rows = [{"day": d, "scope": sc, "usd": deltas[(d, sc)][0], "calls": deltas[(d, sc)][1]}
            for d, sc in keys]  # fmt: skip
    s.execute(_add_stmt(s.get_bind().dialect.name), rows)


def pending(deltas: Mapping[tuple[str, str], tuple[float, int]], day: str, scope: str) -> float:
    """USD of ``(day, scope)`` in ``deltas`` not yet written (0.0 when none)."""
    return deltas.get((day, scope), (0.0, 0))[0]


__all__ = [
    "DAY_SCOPE",
    "SPEND",
    "Deltas",
    "add_spend",
    "agent_scope",
    "deltas_of",
    "pending",
    "scopes_of",
]
