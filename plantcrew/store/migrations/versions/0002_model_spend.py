"""model_spend: the running spend of model calls per day and budget scope

Creates ``model_spend`` and fills it from the ``model_call`` rows already there, as
:mod:`plantcrew.store.spend` keeps it from then on: per day, a ``day`` row (every call) and an
``agent:<p>`` row for each agent id ``p`` and each prefix of it that ends before a ``-``.
The rule is copied here, not imported, so this revision keeps doing what it did.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _scopes(agent: str) -> list[str]:
    parts = agent.split("-")
    prefixes = ("-".join(parts[:n]) for n in range(1, len(parts) + 1))
    return ["day", *(f"agent:{p}" for p in prefixes if p)]


def upgrade() -> None:
    spend = op.create_table(
        "model_spend",
        sa.Column("day", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("usd", sa.Float(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "scope"),
    )
    # the calls there already, summed per day and agent by the database, then per scope here
    totals: dict[tuple[str, str], tuple[float, int]] = {}
    found = op.get_bind().execute(
        sa.text("SELECT day, agent, SUM(cost_usd), COUNT(*) FROM model_call GROUP BY day, agent")
    )
    for day, agent, usd, calls in found:
        for scope in _scopes(agent or ""):
            was_usd, was_calls = totals.get((day, scope), (0.0, 0))
            totals[(day, scope)] = (was_usd + float(usd or 0.0), was_calls + int(calls))
    if totals:
        op.bulk_insert(
            spend,
            [
                {"day": day, "scope": scope, "usd": usd, "calls": calls}
                for (day, scope), (usd, calls) in sorted(totals.items())
            ],
        )


def downgrade() -> None:
    op.drop_table("model_spend")
