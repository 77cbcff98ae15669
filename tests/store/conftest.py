"""The store's tests run against SQLite and PostgreSQL (a fresh schema per test: ``db_url``
of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from plantcrew.store import Run, Store

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on ``db_url`` with one run, ``r1``, started at :data:`NOW`."""
    s = Store(db_url)
    s.create_run(Run(id="r1", started_at=NOW))
    yield s
    s.dispose()
