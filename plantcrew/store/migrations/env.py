"""Alembic environment of plantcrew's schema.

Two ways in:

- programmatically, from :func:`plantcrew.store.migrations.upgrade_to_head` (every
  ``Database(url)`` does it): the caller hands over a connection that is already inside a
  transaction holding the migration lock (``config.attributes["connection"]``), and the
  revisions run in that transaction;
- from the command line, ``alembic -x url=sqlite:///plantcrew.db upgrade head`` (or
  ``revision --autogenerate``) at the repository root, with ``alembic.ini``; without ``-x url``
  the URL is ``$PLANTCREW_DB_URL``.

The target metadata is every SQLModel table defined in a module of ``plantcrew.store``:
each of those modules is imported here, so a new table module is seen by ``--autogenerate``
without touching this file. SQLite gets ``render_as_batch`` so that a revision that alters
a column works there too (SQLite has no ``ALTER COLUMN``; Alembic copies the table).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData
from sqlmodel import SQLModel

from plantcrew.store.migrations import import_table_modules


def target_metadata() -> MetaData:
    """SQLModel's metadata after importing every module of ``plantcrew.store``."""
    import_table_modules()
    return SQLModel.metadata


def _run(connection: object) -> None:
    dialect = getattr(connection, "dialect", None)
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata(),
        render_as_batch=getattr(dialect, "name", "") == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run against the caller's connection, or one opened from ``-x url`` / the settings."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from plantcrew.settings import get_settings
    from plantcrew.store.db import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or get_settings().db_url
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: run against a database")
run_online()
