"""The running spend of model calls (``model_spend``), on SQLite and PostgreSQL: kept exact by
concurrent writers, written with the transaction or not at all, and filled by its migration
from the ``model_call`` rows already there (which it drops again when undone)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import insert, inspect
from sqlmodel import Session, col, select

from plantcrew.messages import Diagnosis, Message, ModelCallInfo, Subjects
from plantcrew.store import ModelCall, ModelSpend, Store, record_model_calls
from plantcrew.store.costs import budget_spend, spend_usd
from plantcrew.store.db import make_engine
from plantcrew.store.migrations import alembic_config, current_revision, head_revision
from plantcrew.store.rows import row_of
from plantcrew.store.spend import deltas_of
from tests.store.test_postgres import WRITERS, at_once

DAY = datetime(2026, 3, 1, 10, tzinfo=UTC)
TXS = 15  # transactions per writer
# binary fractions: their sums are exact in any order, so a lost update cannot hide in rounding
COSTS = (0.125, 0.25)


def record(s: Session, agent: str, costs: tuple[float, ...], when: datetime = DAY) -> None:
    calls = [ModelCallInfo(model_group="reasoning", deployment="m", model="openai/m",
                           cost_usd=c) for c in costs]  # fmt: skip
    payload = Diagnosis(
        task_id="inc-1-diagnose-1",
        incident_id="inc-1",
        agent_id=agent,
        root_cause="cavitation",
        confidence=0.7,
        model_calls=calls,
    )
    msg = Message.new(
        payload,
        source=agent,
        subject=Subjects.EVENTS,
        run_id="r1",
        correlation_id="inc-1",
        time=when,
    )
    record_model_calls(s, calls, msg=msg, agent=agent, task_id=payload.task_id)


def spend_rows(store: Store) -> dict[tuple[str, str], tuple[float, int]]:
    with store.tx() as s:
        return {(r.day, r.scope): (r.usd, r.calls) for r in s.exec(select(ModelSpend))}


def test_concurrent_writers_add_up_to_the_exact_total(db_url: str) -> None:
    # every writer adds to the same day row and role row at once, each on its own connection
    # (PostgreSQL runs them concurrently): a read-modify-write would lose some, a plain insert
    # of a row another writer inserted first would fail
    stores = [Store(db_url) for _ in range(WRITERS)]
    try:

        def write(i: int) -> None:
            for _ in range(TXS):
                with stores[i].tx() as s:
                    record(s, f"operator-{i}", COSTS)
                    record(s, f"diagnostic-{i}", COSTS[:1])

        assert [r for r in at_once(WRITERS, write) if r is not None] == []
        rows = spend_rows(stores[0])
        day = DAY.date().isoformat()
        per_tx = 2 * COSTS[0] + COSTS[1]
        assert rows[(day, "day")] == (WRITERS * TXS * per_tx, WRITERS * TXS * 3)
        assert rows[(day, "agent:operator")] == (WRITERS * TXS * sum(COSTS), WRITERS * TXS * 2)
        assert rows[(day, "agent:diagnostic-0")] == (TXS * COSTS[0], TXS)
        with stores[0].tx() as s:
            assert budget_spend(s, incident_id="inc-1", day=day, agent="operator") == {
                "incident": WRITERS * TXS * per_tx,
                "day": WRITERS * TXS * per_tx,
                "agent": WRITERS * TXS * sum(COSTS),
            }
    finally:
        for st in stores:
            st.dispose()


def test_the_spend_is_written_with_its_calls_or_not_at_all(db_url: str) -> None:
    store = Store(db_url)
    try:
        with pytest.raises(RuntimeError), store.tx() as s:
            record(s, "operator-1", COSTS)
            raise RuntimeError("the handler failed")
        assert spend_rows(store) == {}
        # a session not opened by Store.tx writes the spend at once
        with Session(store.engine) as s, s.begin():
            record(s, "operator-1", COSTS)
            assert budget_spend(s, incident_id=None, day=DAY.date(), agent="operator")[
                "agent"] == sum(COSTS)  # fmt: skip
        assert spend_rows(store)[(DAY.date().isoformat(), "agent:operator-1")] == (0.375, 2)
    finally:
        store.dispose()


CALLS = [  # (day, agent, cost): roles, workers, a longer role, LIKE's wildcards, odd dashes
    ("2026-03-01", "operator-1", 0.5),
    ("2026-03-01", "operator-host-7", 0.25),
    ("2026-03-01", "operators-1", 2.0),
    ("2026-03-01", "op_rator-1", 4.0),
    ("2026-03-01", "-x", 8.0),
    ("2026-03-02", "operator", 16.0),
    ("2026-03-02", "a--b", 32.0),
    ("2026-03-02", "", 64.0),
]


def test_the_migration_fills_the_spend_from_the_calls_there_and_is_undone(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:  # a database from before model_spend, with calls in it
            command.upgrade(alembic_config(conn), "0001")
            rows = [row_of(ModelCall(day=d, agent=a, cost_usd=c, run_id="r1")) for d, a, c in CALLS]
            conn.execute(insert(ModelCall.__table__), rows)  # type: ignore[attr-defined]
    finally:
        engine.dispose()
    store = Store(db_url)  # migrates to head
    try:
        filled = spend_rows(store)
        assert filled[("2026-03-01", "day")] == (14.75, 5)
        assert filled[("2026-03-01", "agent:operator")] == (0.75, 2)
        assert filled[("2026-03-01", "agent:operator-host")] == (0.25, 1)
        assert filled[("2026-03-02", "agent:a-")] == (32.0, 1)
        assert ("2026-03-02", "agent:") not in filled
        assert filled == deltas_of(CALLS)  # what writing those calls now adds
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        with store.engine.connect() as conn:
            assert "model_spend" not in inspect(conn).get_table_names()
            assert current_revision(conn) == "0001"
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        with store.engine.connect() as conn:
            assert current_revision(conn) == head_revision()
        assert spend_rows(store) == filled
        with store.tx() as s:
            assert len(s.exec(select(ModelCall).where(col(ModelCall.run_id) == "r1")).all()) == 8
            assert budget_spend(s, incident_id=None, day="2026-03-01", agent="op_rator") == {
                "incident": 0.0,
                "day": 14.75,
                "agent": 4.0,
            }
            assert spend_usd(s, day="2026-03-01", agent="op_rator") == 4.0
    finally:
        store.dispose()
