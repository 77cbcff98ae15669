"""The store's tests run against SQLite and PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from plantcrew.store import Run, Store

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crew.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on ``db_url`` with one run, ``r1``, started at :data:`NOW`."""
    s = Store(db_url)
    s.create_run(Run(id="r1", started_at=NOW))
    yield s
    s.dispose()
