"""Schema migrations (Alembic) on SQLite and PostgreSQL: the revisions build exactly the
tables the models declare, run once when many processes open the database together, can be
undone, and adopt a database made before migrations existed."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from plantcrew.errors import StoreError
from plantcrew.store import Run, Store
from plantcrew.store.db import Database, make_engine
from plantcrew.store.migrations import (
    BASELINE,
    BASELINE_TABLES,
    alembic_config,
    current_revision,
    head_revision,
    import_table_modules,
)
from tests.store.test_postgres import at_once

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_migrated_schema_is_what_the_models_declare(db_url: str) -> None:
    store = Store(db_url)
    import_table_modules()
    try:
        with store.engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
            )
        # a model changed without a revision shows here: add one (plantcrew.store.migrations)
        assert diff == []
    finally:
        store.dispose()


def test_the_baseline_creates_the_baseline_tables(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), BASELINE)
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
        assert tables == set(BASELINE_TABLES)
    finally:
        engine.dispose()


def test_many_processes_opening_a_new_database_migrate_it_once(db_url: str) -> None:
    opened = at_once(6, lambda _: Database(db_url))
    errors = [r for r in opened if isinstance(r, Exception)]
    assert errors == []
    try:
        with opened[0].engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        assert [v for (v,) in versions] == [head_revision()]
    finally:
        for db in opened:
            db.dispose()


def test_revisions_can_be_undone_and_redone(db_url: str) -> None:
    store = Store(db_url)
    try:
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with store.engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
            assert current_revision(conn) is None
        store.dispose()
        store = Store(db_url)
        store.create_run(Run(id="r1", started_at=NOW))
        assert store.get_run("r1").started_at == NOW
    finally:
        store.dispose()


def test_a_database_made_before_migrations_is_adopted_with_its_data(db_url: str) -> None:
    engine = make_engine(db_url)
    import_table_modules()
    legacy = [SQLModel.metadata.tables[n] for n in BASELINE_TABLES if n != "api_token"]
    SQLModel.metadata.create_all(engine, tables=legacy)  # as plantcrew did before migrations
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO run (id, scenario, scenario_path, seed, status, bus_url, started_at, "
            "plant_time, config, summary) VALUES ('old', 'x', '', 0, 'passed', '', "
            "'2026-01-01 00:00:00', 0, '{}', '{}')"
        )
    engine.dispose()
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            assert "api_token" in inspect(conn).get_table_names()  # the baseline's missing table
        assert store.get_run("old").status == "passed"
    finally:
        store.dispose()


def test_a_database_a_newer_plantcrew_migrated_is_refused_with_a_store_error(db_url: str) -> None:
    store = Store(db_url)
    with store.engine.begin() as conn:  # as a later release with revision 9999 would leave it
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    store.dispose()
    with pytest.raises(StoreError, match=r"revision .9999.*newer plantcrew"):
        Database(db_url)


def test_a_database_the_cli_cannot_open_is_one_line_and_exit_3(tmp_path: Path) -> None:
    # the console script's entry point, as a user runs it: no traceback, the URL without its
    # password, and an exit code a script can tell from a bad configuration (2)
    url = "postgresql://postgres:s3cret@127.0.0.1:1/nowhere"
    argv = [sys.executable, "-c", "from plantcrew.cli import main; main()"]
    proc = subprocess.run(
        [*argv, "audit", "verify", "--db", url],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "s3cret" not in proc.stderr
    assert proc.stderr.startswith("error: cannot open database postgresql://postgres")
