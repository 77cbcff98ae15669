"""Inserting table rows without the ORM's unit of work.

``session.add(row)`` costs a unit-of-work flush per object (the object's state is tracked,
sorted, compared and refreshed), which dominated the Coordinator's CPU. A row written once
and not changed in the same transaction needs none of that: :func:`insert_rows` inserts
SQLModel table objects with one Core ``INSERT`` (several rows of one table: one multi-row
statement). The objects stay detached; reading them back in the same transaction
(``session.get``) works as for any committed row.

The statements are built once per table and dialect and executed with the rows as parameters
(:func:`insert_stmt`): SQLAlchemy then finds the compiled form in its cache from the statement's
memoized cache key. A statement made with ``.values(**row)`` for each row costs about three
times as much CPU (a new cache key over every value, each time), which the Coordinator paid on
every task it routed.

A row read with Core becomes a table object with :func:`detached`, as the ORM's loader makes
one (no ``__init__``: no validation, no defaults), in about a tenth of the CPU of loading it
through the session (``session.get`` then ``expunge``) and of making it with ``__init__``.
:func:`new_row` makes a new one the same way, with the fields' defaults: SQLModel's
``__init__`` of a table object (which does not validate either) costs 40-130 us, most of it
per-field bookkeeping that an object written with :func:`insert_rows` never uses.
:func:`read_row` reads one by its ``id`` that way (optionally locking it), and
:func:`update_row` writes the fields a caller changed: no unit of work, whose flush (and
autoflush before each statement) cost more than the statements themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy import bindparam, insert, inspect, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import configure_mappers
from sqlmodel import Session, SQLModel

T = TypeVar("T", bound=SQLModel)

_STATEMENTS: dict[tuple[str, str, str | None, str | None], Any] = {}


def insert_stmt(
    s: Session, table: Any, *, if_new_key: str | None = None, returning: str | None = None
) -> Any:
    """The ``INSERT`` into ``table`` (with ``if_new_key``: ``ON CONFLICT (key) DO NOTHING``;
    with ``returning``: ``RETURNING`` that column) for the session's dialect, built once and
    reused; execute it with the row dicts as parameters."""
    dialect = s.get_bind().dialect.name
    cache_key = (dialect, table.name, if_new_key, returning)
    stmt = _STATEMENTS.get(cache_key)
    if stmt is None:
        if if_new_key is None:
            stmt = insert(table)
        else:
            stmt = upsert(dialect, table).on_conflict_do_nothing(index_elements=[if_new_key])
        if returning is not None:
            stmt = stmt.returning(table.c[returning])
        _STATEMENTS[cache_key] = stmt
    return stmt


def upsert(dialect: str, table: Any) -> Any:
    """An ``INSERT`` into ``table`` that can take an ``ON CONFLICT`` clause
    (``on_conflict_do_nothing`` / ``on_conflict_do_update``) on ``dialect``: ``postgresql``
    or ``sqlite`` (anything else is taken for SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def values_of(obj: SQLModel, names: Iterable[str]) -> dict[str, Any]:
    """The values of fields ``names`` of table object ``obj``, as they are: each read from
    the object's ``__dict__``, where the ORM keeps them, without its attribute machinery (an
    attribute not loaded there is read through it)."""
    held = obj.__dict__
    return {name: held[name] if name in held else getattr(obj, name) for name in names}


_COLUMNS: dict[type, tuple[list[str], list[str]]] = {}  # class -> (columns, key columns)


def row_of(obj: SQLModel) -> dict[str, Any]:
    """The column values of table object ``obj`` (an unset autoincrement key left out), as
    they are (``model_dump`` would deep-copy every JSON value)."""
    columns = _COLUMNS.get(type(obj))
    if columns is None:
        table = type(obj).__table__  # type: ignore[attr-defined]
        names = [c.name for c in table.columns]
        columns = _COLUMNS[type(obj)] = (names, [c.name for c in table.columns if c.primary_key])
    row = values_of(obj, columns[0])
    for key in columns[1]:
        if row[key] is None:
            del row[key]
    return row


_MANAGERS: dict[type, Any] = {}  # class -> its SQLAlchemy class manager


def detached(cls: type[T], values: Mapping[Any, Any]) -> T:
    """A table object of ``cls`` holding ``values`` (a row read with Core, e.g. a result row's
    ``_mapping``: give every column, since nothing is filled in), in no session. Made as the
    ORM's loader makes the objects it reads; changes to it are written only by the caller
    (e.g. :func:`~plantcrew.store.store.save_incident`): never ``session.add`` it, which would
    take it for a new row."""
    manager = _MANAGERS.get(cls)
    if manager is None:
        mapper = inspect(cls)
        if not mapper.configured:  # its attributes work once the mappers are configured
            configure_mappers()
        manager = _MANAGERS[cls] = mapper.class_manager
    obj: T = manager.new_instance()
    obj.__dict__.update(values)
    return obj


# per table class: (field, default factory or None, default) for every field
_DEFAULTS: dict[type, list[tuple[str, Callable[..., Any] | None, Any]]] = {}


def new_row(cls: type[T], **values: Any) -> T:
    """A new table object of ``cls``, in no session: ``values``, and for every other field its
    default (a default factory is called), as ``cls(**values)`` makes it (SQLModel does not
    validate table objects either way), in a tenth of the CPU. Raises TypeError naming a
    field that has no default and is not given."""
    spec = _DEFAULTS.get(cls)
    if spec is None:
        spec = _DEFAULTS[cls] = [
            (name, field.default_factory, field.default) for name, field in cls.model_fields.items()
        ]
    for name, factory, default in spec:
        if name not in values:
            if factory is None and default is PydanticUndefined:
                raise TypeError(f"{cls.__name__}: field {name!r} has no default and is not given")
            values[name] = default if factory is None else factory()
    return detached(cls, values)


_READS: dict[tuple[str, bool], Any] = {}
_UPDATES: dict[tuple[str, tuple[str, ...]], Any] = {}


def read_row(s: Session, cls: type[T], row_id: Any, *, lock: bool = False) -> T | None:
    """The row of ``cls``'s table whose ``id`` is ``row_id`` as stored now, in the caller's
    transaction, as a :func:`detached` object (None when there is none). ``lock``: ``SELECT
    ... FOR UPDATE`` (PostgreSQL; SQLite's transaction holds the write lock already)."""
    table = cls.__table__  # type: ignore[attr-defined]
    stmt = _READS.get((table.name, lock))
    if stmt is None:
        stmt = sa_select(table).where(table.c.id == bindparam("row_id"))
        _READS[(table.name, lock)] = stmt = stmt.with_for_update() if lock else stmt
    row = s.execute(stmt, {"row_id": row_id}).first()
    return None if row is None else detached(cls, row._mapping)


def update_row(s: Session, obj: SQLModel, *fields: str) -> None:
    """Write ``fields`` of table object ``obj`` to its row (by ``id``) now, in the caller's
    transaction (one ``UPDATE``, built once per table and fields)."""
    table = type(obj).__table__  # type: ignore[attr-defined]
    stmt = _UPDATES.get((table.name, fields))
    if stmt is None:
        stmt = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({name: bindparam(name) for name in fields})
        )
        _UPDATES[(table.name, fields)] = stmt
    s.execute(stmt, {"row_id": obj.id, **values_of(obj, fields)})  # type: ignore[attr-defined]


def insert_rows(s: Session, objs: Sequence[SQLModel], *, if_new: bool = False) -> None:
    """Insert ``objs`` (table objects of one class) in the caller's transaction; ``if_new``:
    skip an object whose ``id`` is there already. Raises the driver's integrity error (as a
    StoreError at commit) for a duplicate key otherwise."""
    if not objs:
        return
    table = type(objs[0]).__table__  # type: ignore[attr-defined]
    stmt = insert_stmt(s, table, if_new_key="id" if if_new else None)
    rows = [row_of(o) for o in objs]
    s.execute(stmt, rows if len(rows) > 1 else rows[0])


__all__ = [
    "detached",
    "insert_rows",
    "insert_stmt",
    "new_row",
    "read_row",
    "row_of",
    "update_row",
    "upsert",
    "values_of",
]
