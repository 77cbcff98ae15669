"""Concurrent writers, on PostgreSQL (and SQLite): each on its own connection, at once.

SQLite serialises every transaction (``BEGIN IMMEDIATE``); PostgreSQL runs them concurrently
under READ COMMITTED, so these are the tests that catch a missing lock there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlmodel import func, select

from plantcrew.store import Action, Approval, AuditEntry, Run, Store
from plantcrew.store.execution import begin_execution
from plantcrew.store.tokens import issue_token

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WRITERS = 6


def at_once(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i < n in threads released together; returns results (or errors)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_audit_chain_stays_intact_with_concurrent_writers(db_url: str) -> None:
    stores = [Store(db_url) for _ in range(WRITERS)]
    try:

        def append(i: int) -> None:
            for k in range(10):
                stores[i].audit(time=NOW, actor=f"writer-{i}", kind="test", data={"k": k})

        errors = [r for r in at_once(WRITERS, append) if r is not None]
        assert errors == []
        assert stores[0].verify_audit() == []
        with stores[0].tx() as s:
            assert s.exec(select(func.count()).select_from(AuditEntry)).one() == WRITERS * 10
    finally:
        for st in stores:
            st.dispose()


def test_an_approval_is_claimed_by_exactly_one_of_concurrent_executors(db_url: str) -> None:
    stores = [Store(db_url) for _ in range(WRITERS)]
    try:
        token = issue_token("apr-a1", "a1", "pump1", "stop", {})
        with stores[0].tx() as s:
            s.add(Run(id="r1", started_at=NOW))
            s.add(
                Action(
                    id="a1",
                    run_id="r1",
                    incident_id="i1",
                    device_id="pump1",
                    command="stop",
                    status="approved",
                    idempotency_key="i1:a1",
                )
            )
            s.add(
                Approval(
                    id="apr-a1",
                    run_id="r1",
                    incident_id="i1",
                    action_id="a1",
                    status="approved",
                    token=token,
                )
            )

        def claim(i: int) -> bool:
            _, send = begin_execution(
                stores[i], action_id="a1", approval_id="apr-a1", token=token, plant_time=float(i)
            )
            return send

        results = at_once(WRITERS, claim)
        assert [r for r in results if isinstance(r, Exception)] == []
        assert results.count(True) == 1, f"the command would be sent {results.count(True)} times"
    finally:
        for st in stores:
            st.dispose()
