"""action.claim: which claim of an action may record its outcome (a fencing token)

Adds ``action.claim`` (0 for every action already there: none is held by a claim numbered
yet; an ``executing`` one is taken over as claim 1, see ``plantcrew.store.execution``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a database adopted from before migrations had its missing tables made from today's
    # models (plantcrew.store.migrations): its action table may have the column already
    if "claim" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("action")}:
        return
    with op.batch_alter_table("action", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("action", schema=None) as batch_op:
        batch_op.drop_column("claim")
