"""Idempotency keys in the store (SQLite and PostgreSQL): expiry on claim, bounded purges."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from plantcrew.store import Store
from plantcrew.store.access import AccessStore, IdempotencyRecord
from tests.store.conftest import NOW

DAY = timedelta(days=1)


def _keys(store: Store) -> set[str]:
    with store.tx() as s:
        return {r.key for r in s.exec(select(IdempotencyRecord)).all()}


def test_a_purge_deletes_at_most_its_limit_oldest_first(store: Store) -> None:
    access = AccessStore(store)
    for i in range(5):
        assert access.begin_request("tok", f"k{i}", "fp", now=NOW - (10 - i) * DAY) is None
    access.begin_request("tok", "fresh", "fp", now=NOW)
    assert access.purge_requests(DAY, limit=3, now=NOW) == 3
    assert _keys(store) == {"k3", "k4", "fresh"}
    assert access.purge_requests(DAY, limit=3, now=NOW) == 2
    assert _keys(store) == {"fresh"}
    assert access.purge_requests(DAY, now=NOW) == 0


def test_a_claim_forgets_a_record_past_the_ttl(store: Store) -> None:
    access = AccessStore(store)
    assert access.begin_request("tok", "k", "first", now=NOW - 2 * DAY) is None
    access.finish_request("tok", "k", 202, "{}")
    earlier = access.begin_request("tok", "k", "second", now=NOW, ttl=3 * DAY)
    assert earlier is not None and earlier.fingerprint == "first"  # within the TTL: kept
    assert access.begin_request("tok", "k", "second", now=NOW, ttl=DAY) is None  # claimed anew
    again = access.begin_request("tok", "k", "third", now=NOW, ttl=DAY)
    assert again is not None and again.fingerprint == "second" and again.status == "in_progress"
