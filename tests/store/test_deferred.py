"""Writes a transaction defers to its commit (SQLite and PostgreSQL): the outbox rows come back
in order with their seq, the conversation keeps its order, the audit chain stays intact, and a
rolled-back transaction leaves nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from plantcrew.messages import AnomalyCleared, Message, Subjects
from plantcrew.store import AuditEntry, Store, add_outbox, record_message, verify_chain
from plantcrew.store.audit import append_deferred
from plantcrew.store.deferred import OutboxRow, committed_outbox
from tests.store.conftest import NOW


def message(i: int) -> Message:
    return Message.new(
        AnomalyCleared(device_id=f"pump{i}", ts=float(i)),
        source="t",
        subject=Subjects.EVENTS,
        run_id="r1",
    )


def test_outbox_rows_come_back_from_the_commit_in_order(store: Store) -> None:
    sent = [message(i) for i in range(3)]
    with store.tx() as s:
        for m in sent:
            add_outbox(s, m, 1.0)
        rows = committed_outbox(s)
        assert rows == []  # not written before the commit
    assert [r.message.id for r in rows] == [m.id for m in sent]
    pending = store.pending_outbox()
    assert [(r.seq, r.subject, r.message_id) for r in pending] == [
        (r.seq, r.subject, str(r.message.id)) for r in rows
    ]
    assert all(isinstance(r, OutboxRow) for r in rows)


def test_conversation_keeps_the_order_of_queued_and_received_messages(store: Store) -> None:
    first, received, last = message(1), message(2), message(3)
    with store.tx() as s:
        add_outbox(s, first, 1.0)
        assert record_message(s, received, 1.0)
        add_outbox(s, last, 1.0)
    assert [m.id for m in store.messages("r1")] == [str(first.id), str(received.id), str(last.id)]


def test_rolled_back_transaction_writes_nothing_it_deferred(store: Store) -> None:
    with pytest.raises(RuntimeError), store.tx() as s:
        add_outbox(s, message(1), 1.0)
        append_deferred(s, time=NOW, actor="c", kind="k", data={"i": 1})
        rows = committed_outbox(s)
        raise RuntimeError("the state change failed")
    assert rows == []
    assert store.pending_outbox() == [] and store.messages("r1") == []
    with store.tx() as s:
        assert verify_chain(s) == []
        assert s.exec(select(AuditEntry)).all() == []


def test_deferred_audit_entries_chain_after_immediate_ones(store: Store) -> None:
    store.audit(time=NOW, actor="c", kind="first", data={"i": 0})
    with store.tx() as s:
        for i in range(1, 4):
            append_deferred(s, time=NOW, actor="c", kind="deferred", data={"i": i})
    store.audit(time=NOW, actor="c", kind="last", data={"i": 4})
    with store.tx() as s:
        assert verify_chain(s) == []
        rows = s.execute(text("SELECT seq, kind FROM audit ORDER BY seq"))
        assert [tuple(r) for r in rows] == [
            (1, "first"), (2, "deferred"), (3, "deferred"), (4, "deferred"), (5, "last"),
        ]  # fmt: skip


def test_a_session_outside_tx_writes_at_once(store: Store) -> None:
    with Session(store.engine) as s:
        add_outbox(s, message(1), 1.0)
        append_deferred(s, time=NOW, actor="c", kind="k", data={})
        assert committed_outbox(s) == []
        s.commit()
    assert len(store.pending_outbox()) == 1
    with store.tx() as s:
        assert verify_chain(s) == []
