"""The store on SQLite and PostgreSQL: optimistic locking, the audit chain, at-most-once
execution; SQLite's WAL mode."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from plantcrew.errors import ApprovalError, ConflictError
from plantcrew.messages import Message, Reading, Subjects, TelemetryBatch
from plantcrew.store import (
    Action,
    Approval,
    Incident,
    Store,
    add_outbox,
    load_incident,
    read_incident,
    record_message,
    save_incident,
)
from plantcrew.store.execution import begin_execution, finish_execution
from plantcrew.store.tokens import issue_token
from tests.store.conftest import NOW


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'crew.db'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000


def test_optimistic_locking_refuses_a_stale_write(store: Store) -> None:
    with store.tx() as s:
        s.add(Incident(id="i1", run_id="r1", device_id="pump1"))
    with store.tx() as s:
        first = load_incident(s, "i1")
    with store.tx() as s:
        second = load_incident(s, "i1")
    first.status = "diagnosing"
    with store.tx() as s:
        save_incident(s, first)
    second.status = "escalated"
    with pytest.raises(ConflictError), store.tx() as s:
        save_incident(s, second)
    assert store.get_incident("i1").status == "diagnosing"
    assert store.get_incident("i1").version == 2


def test_an_incident_read_is_the_stored_row_and_only_save_writes_it(store: Store) -> None:
    with store.tx() as s:
        s.add(Incident(id="i1", run_id="r1", device_id="pump1", data={"a": 1}))
    with store.tx() as s:
        assert read_incident(s, "nope") is None
        inc = read_incident(s, "i1")
        assert inc is not None and inc not in s
        assert (inc.status, inc.data, inc.version, inc.closed_at) == ("open", {"a": 1}, 1, None)
        inc.status, inc.data = "diagnosing", {**inc.data, "b": 2}
        save_incident(s, inc)
        again = read_incident(s, "i1")  # read again in the same transaction: as saved
        assert again is not None and again is not inc
        assert (again.status, again.data, again.version) == ("diagnosing", {"a": 1, "b": 2}, 2)
        again.status = "escalated"  # changed, never saved: the commit does not write it
    stored = store.get_incident("i1")
    assert (stored.status, stored.data, stored.version) == ("diagnosing", {"a": 1, "b": 2}, 2)


def test_message_log_is_idempotent_and_outbox_commits_with_it(store: Store) -> None:
    r = Reading(device_id="pump1", sensor="flow_rate", value=1.0, ts=0)
    msg = Message.new(
        TelemetryBatch(device_id="pump1", readings=[r]),
        source="t",
        subject=Subjects.EVENTS,
        run_id="r1",
    )
    with store.tx() as s:
        assert record_message(s, msg, 1.0)
        assert not record_message(s, msg, 1.0)
    other = Message.new(msg.payload, source="t", subject=Subjects.EVENTS, run_id="r1")
    with pytest.raises(RuntimeError), store.tx() as s:
        add_outbox(s, other, 2.0)
        raise RuntimeError("the state change failed")
    assert store.pending_outbox() == []  # rolled back together
    assert [m.id for m in store.messages("r1")] == [str(msg.id)]


def _audit(store: Store, n: int) -> None:
    for i in range(n):
        store.audit(time=NOW, actor="coordinator", kind="policy.decision", data={"i": i})


@pytest.mark.parametrize(
    ("tamper", "seq", "problem"),
    [
        ("UPDATE audit SET data = '{\"i\": 99}' WHERE seq = 3", 3, "edited"),
        ("DELETE FROM audit WHERE seq = 2", 3, "deleted"),
        (
            "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 4; "
            "UPDATE audit SET seq = 4 WHERE seq = 100",
            2,
            "reordered",
        ),
    ],
)
def test_audit_chain_finds_tampering(store: Store, tamper: str, seq: int, problem: str) -> None:
    _audit(store, 5)
    assert store.verify_audit() == []
    with store.engine.begin() as conn:
        for statement in tamper.split("; "):
            conn.execute(text(statement))
    breaks = store.verify_audit()
    assert breaks, "tampering went unnoticed"
    assert breaks[0].seq == seq
    assert any(problem in b.problem for b in breaks)


def test_audit_entry_at_a_utc_offset_verifies(store: Store) -> None:
    # the database keeps the instant in UTC; the hash must be of what it keeps
    two_hours_east = NOW.astimezone(timezone(timedelta(hours=2)))
    store.audit(time=two_hours_east, actor="alice", kind="test", data={})
    _audit(store, 1)
    assert store.verify_audit() == []


def _approved_action(store: Store, *, consumed: bool = False) -> str:
    token = issue_token("apr-a1", "a1", "pump1", "set_speed", {"speed_pct": 80})
    with store.tx() as s:
        s.add(
            Action(
                id="a1",
                run_id="r1",
                incident_id="i1",
                device_id="pump1",
                command="set_speed",
                parameters={"speed_pct": 80},
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
                consumed_at=1.0 if consumed else None,
            )
        )
    return token


def test_execution_is_claimed_once(store: Store) -> None:
    token = _approved_action(store)
    action, send = begin_execution(
        store, action_id="a1", approval_id="apr-a1", token=token, plant_time=5.0
    )
    assert send and action.status == "executing"
    again, send_again = begin_execution(
        store, action_id="a1", approval_id="apr-a1", token=token, plant_time=6.0
    )
    assert not send_again  # a redelivery must not send the command twice
    assert again.status == "executing"
    assert store.get_approval("apr-a1").consumed_at == 5.0


def test_a_taken_over_claim_records_nothing(store: Store) -> None:
    """The first claimant, cut off and back late, cannot record its outcome once another
    executor took the action over, before or after that one recorded its own
    (tests/distributed/test_partition.py: the same on the real crew)."""
    token = _approved_action(store)
    first, _ = begin_execution(
        store, action_id="a1", approval_id="apr-a1", token=token, plant_time=5.0
    )
    takeover, send = begin_execution(
        store, action_id="a1", approval_id="apr-a1", token=token, plant_time=6.0
    )
    assert not send and (first.claim, takeover.claim) == (1, 2)
    unknown = {"error": "no answer from the plant: outcome unknown"}
    with pytest.raises(ConflictError, match=r"is executing under claim 2: .* claim 1 .*failed"):
        finish_execution(store, "a1", claim=first.claim, status="failed", receipt=unknown)
    receipt = {"status": "duplicate", "idempotency_key": "i1:a1"}
    finish_execution(store, "a1", claim=takeover.claim, status="executed", receipt=receipt)
    with pytest.raises(ConflictError, match=r"is executed under claim 2: .* claim 1 .*failed"):
        finish_execution(store, "a1", claim=first.claim, status="failed", receipt=unknown)
    with pytest.raises(ConflictError, match="is executed under claim 2"):  # recorded once
        finish_execution(store, "a1", claim=takeover.claim, status="failed", receipt=unknown)
    (action,) = store.actions()
    assert (action.status, action.receipt, action.claim) == ("executed", receipt, 2)
    again, send = begin_execution(
        store, action_id="a1", approval_id="apr-a1", token=token, plant_time=7.0
    )
    assert not send and again.claim == 2  # executed: nothing to take over


def test_forged_token_is_refused(store: Store) -> None:
    _approved_action(store)
    with pytest.raises(ApprovalError, match="forged or issued for another command"):
        begin_execution(store, action_id="a1", approval_id="apr-a1", token="0" * 64, plant_time=1.0)
    assert store.actions()[0].status == "proposed"


def test_token_for_other_parameters_is_refused(store: Store) -> None:
    _approved_action(store)
    wrong = issue_token("apr-a1", "a1", "pump1", "set_speed", {"speed_pct": 20})
    with pytest.raises(ApprovalError):
        begin_execution(store, action_id="a1", approval_id="apr-a1", token=wrong, plant_time=1.0)


def test_consumed_approval_cannot_be_reused(store: Store) -> None:
    token = _approved_action(store, consumed=True)
    with pytest.raises(ApprovalError, match="used already"):
        begin_execution(store, action_id="a1", approval_id="apr-a1", token=token, plant_time=1.0)


def test_approval_for_another_action_is_refused(store: Store) -> None:
    token = _approved_action(store)
    with store.tx() as s:
        s.add(
            Action(
                id="a2",
                run_id="r1",
                incident_id="i1",
                device_id="pump1",
                command="stop",
                idempotency_key="i1:a2",
            )
        )
    with pytest.raises(ApprovalError, match="is for action a1"):
        begin_execution(store, action_id="a2", approval_id="apr-a1", token=token, plant_time=1.0)


def test_an_action_whose_outcome_was_lost_is_not_sent_again_and_says_why(store: Store) -> None:
    """The plant never answered (the executor recorded 'failed: outcome unknown'); the task is
    then delivered again. The approval allowed one actuation, so nothing is sent, and the
    refusal says what happened to the action, not only that the approval was used."""
    token = _approved_action(store)
    first, send = begin_execution(
        store, action_id="a1", approval_id="apr-a1", token=token, plant_time=5.0
    )
    assert send
    unknown = {"error": "no answer from the plant within 10 s: outcome unknown"}
    finish_execution(store, "a1", claim=first.claim, status="failed", receipt=unknown)
    with pytest.raises(ApprovalError, match=r"action a1 failed.*outcome unknown.*one actuation"):
        begin_execution(store, action_id="a1", approval_id="apr-a1", token=token, plant_time=9.0)
    assert store.actions()[0].status == "failed"
