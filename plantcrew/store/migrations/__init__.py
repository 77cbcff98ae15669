"""Schema migrations (Alembic) of the plantcrew database, on SQLite and PostgreSQL alike.

:func:`upgrade_to_head` brings a database to the newest revision; ``Database(url)`` calls it,
so every process (runner, coordinator, workers, API) migrates on start. It is safe to call
from many processes at once: the whole upgrade runs in one transaction that first takes a
lock (PostgreSQL: ``pg_advisory_xact_lock``; SQLite: ``BEGIN IMMEDIATE``, the database's write
lock), and reads the current revision only once it holds it, so the first process migrates and
the others find the schema at head. A database made before migrations existed (plantcrew's
tables, no ``alembic_version``) gets the baseline's missing tables and is stamped at the
baseline revision before the newer revisions run.

Adding a revision (see also ``alembic.ini`` at the repository root)::

    # 1. change or add SQLModel tables in a module of plantcrew/store/
    # 2. generate the revision against a database at head, then read and fix it:
    alembic -x url=sqlite:////tmp/head.db upgrade head
    alembic -x url=sqlite:////tmp/head.db revision --autogenerate --rev-id 0002 -m "what changed"
    # 3. run the store tests on SQLite and PostgreSQL: pytest tests/store

Autogenerate does not see renames (it writes a drop and an add) or data migrations; write
those by hand. Column changes run in batch mode on SQLite (``render_as_batch``).
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from functools import lru_cache
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from plantcrew.errors import StoreError

SCRIPT_LOCATION = "plantcrew.store:migrations"
BASELINE = "0001"
"""The first revision: the schema as it was when migrations were introduced."""

BASELINE_TABLES = (
    "action",
    "agent",
    "api_token",
    "approval",
    "approval_vote",
    "audit",
    "dead_letter",
    "idempotency_key",
    "incident",
    "lesson",
    "message",
    "model_call",
    "outbox",
    "run",
    "task",
)
"""Tables the baseline revision creates (a legacy database gets those it lacks)."""

MIGRATION_LOCK = 0x706C616E74637201
"""PostgreSQL advisory lock key held while migrating (``"plantc"`` + ``0x7201``)."""


def import_table_modules() -> None:
    """Import every module of ``plantcrew.store`` so that all its tables are in the metadata."""
    import plantcrew.store

    for info in pkgutil.iter_modules(plantcrew.store.__path__):
        if info.name != "migrations":
            importlib.import_module(f"plantcrew.store.{info.name}")


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic ``Config`` for plantcrew's scripts (optionally bound to ``connection``)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision id (the scripts are read once per process)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no revision found in {SCRIPT_LOCATION}")
    return head


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    """Every revision id of this plantcrew's scripts."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return frozenset(s.revision for s in scripts.walk_revisions())


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine, *, wait_s: float = 120.0) -> bool:
    """Migrate the database behind ``engine`` to the newest revision (see module doc).

    Returns True when something was applied, False when it was at head already. A SQLite
    database another process is migrating (locked past its busy timeout) is waited for, up to
    ``wait_s`` seconds. Raises SQLAlchemy's errors (``Database`` turns them into StoreError),
    and StoreError for a database at a revision these scripts do not have (a newer plantcrew
    migrated it).
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _upgrade(engine)
        except OperationalError as exc:
            if "locked" not in str(exc.orig).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _upgrade(engine: Engine) -> bool:
    head = head_revision()
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (see plantcrew.store.db)
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        current = current_revision(conn)
        if current == head:
            return False
        if current is not None and current not in known_revisions():
            raise StoreError(
                f"the database is at schema revision {current!r}, which this plantcrew does "
                f"not know (its newest is {head!r}): a newer plantcrew migrated it; upgrade "
                "plantcrew"
            )
        from alembic import command

        cfg = alembic_config(conn)
        if current is None and inspect(conn).has_table("run"):
            _adopt_legacy(conn, cfg)
        command.upgrade(cfg, "head")
        return True


def _adopt_legacy(conn: Connection, cfg: Any) -> None:
    """A database made by ``create_all`` before migrations: complete it, stamp the baseline."""
    from alembic import command
    from sqlmodel import SQLModel

    import_table_modules()
    tables = [SQLModel.metadata.tables[name] for name in BASELINE_TABLES]
    SQLModel.metadata.create_all(conn, tables=tables, checkfirst=True)
    command.stamp(cfg, BASELINE)


__all__ = [
    "BASELINE",
    "BASELINE_TABLES",
    "MIGRATION_LOCK",
    "alembic_config",
    "current_revision",
    "head_revision",
    "import_table_modules",
    "known_revisions",
    "upgrade_to_head",
]
