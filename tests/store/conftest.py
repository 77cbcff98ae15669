"""The store's tests run against SQLite and PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crew.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url
