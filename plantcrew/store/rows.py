"""Inserting table rows without the ORM's unit of work.

``session.add(row)`` costs a unit-of-work flush per object (the object's state is tracked,
sorted, compared and refreshed), which dominated the Coordinator's CPU. A row written once
and not changed in the same transaction needs none of that: :func:`insert_rows` inserts
SQLModel table objects with one Core ``INSERT`` (several rows of one table: one multi-row
statement). The objects stay detached; reading them back in the same transaction
(``session.get``) works as for any committed row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, SQLModel


def insert_new(s: Session, table: Any, key: str = "id") -> Any:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` on ``table`` for the session's database."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=[key])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=[key])


def row_of(obj: SQLModel) -> dict[str, Any]:
    """The column values of table object ``obj`` (an unset autoincrement key left out), as
    they are (``model_dump`` would deep-copy every JSON value)."""
    table = type(obj).__table__  # type: ignore[attr-defined]
    values = {c.name: (getattr(obj, c.name), c.primary_key) for c in table.columns}
    return {k: v for k, (v, key) in values.items() if not (v is None and key)}


def insert_rows(s: Session, objs: Sequence[SQLModel], *, if_new: bool = False) -> None:
    """Insert ``objs`` (table objects of one class) in the caller's transaction; ``if_new``:
    skip an object whose ``id`` is there already. Raises the driver's integrity error (as a
    StoreError at commit) for a duplicate key otherwise."""
    if not objs:
        return
    table = type(objs[0]).__table__  # type: ignore[attr-defined]
    stmt = insert_new(s, table) if if_new else insert(table)
    rows = [row_of(o) for o in objs]
    s.execute(stmt, rows) if len(rows) > 1 else s.execute(stmt.values(**rows[0]))


__all__ = ["insert_new", "insert_rows", "row_of"]
