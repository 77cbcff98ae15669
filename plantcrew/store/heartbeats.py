"""The ``agent`` table: the last heartbeat of each agent, as a Coordinator process heard it.

A Coordinator process writes it (:class:`plantcrew.crews.roster.AgentRoster`: at most one
row write per agent per heartbeat interval, all of an interval in one transaction);
``plantcrew agents`` and the API's ``/agents`` read it. ``last_seen`` is the UTC wall time at
which the writing process received the heartbeat.

Rows are upserted with ``INSERT ... ON CONFLICT (agent_id) DO UPDATE ... WHERE
agent.last_seen <= excluded.last_seen`` on SQLite and PostgreSQL: with several Coordinator
processes the newest heartbeat stays, whichever writes last. A transaction writes its rows in
``agent_id`` order, so two writers lock them in one order and never wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from plantcrew.store.rows import row_of, upsert
from plantcrew.store.tables import AgentRecord

AGENT = AgentRecord.__table__  # type: ignore[attr-defined]
_UPSERT: dict[str, Any] = {}


def _upsert_stmt(dialect: str) -> Any:
    stmt = _UPSERT.get(dialect)
    if stmt is None:
        ins = upsert(dialect, AGENT)
        stmt = _UPSERT[dialect] = ins.on_conflict_do_update(
            index_elements=[AGENT.c.agent_id],
            set_={
                name: ins.excluded[name]
                for name in ("role", "capabilities", "last_seen", "stopping")
            },
            where=AGENT.c.last_seen <= ins.excluded.last_seen,
        )
    return stmt


def record_agents(s: Session, rows: Sequence[AgentRecord]) -> None:
    """Upsert ``rows`` (one per ``agent_id``; ``last_seen`` aware) in ``s``'s transaction,
    keeping for each agent the row with the newest ``last_seen`` (see module doc)."""
    if not rows:
        return
    values = [row_of(r) for r in sorted(rows, key=lambda r: r.agent_id)]
    s.execute(_upsert_stmt(s.get_bind().dialect.name), values)


def forget_agents(s: Session, silent_since: datetime) -> int:
    """Delete the rows of agents not heard since ``silent_since`` (aware); how many."""
    result = s.execute(delete(AGENT).where(AGENT.c.last_seen < silent_since))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def agent_rows(s: Session) -> list[AgentRecord]:
    """Every row, by role then agent id."""
    q = select(AgentRecord).order_by(col(AgentRecord.role), col(AgentRecord.agent_id))
    return list(s.exec(q))


__all__ = ["AGENT", "agent_rows", "forget_agents", "record_agents"]
