"""``plantcrew approvals approve|reject`` refuses, as the API does, a vote that could never
count: on an approval that is no longer pending, past its deadline, in a role the approval
does not allow, or by a person who has decided (or whose vote waits) already. Before, the
command answered "recorded; the Coordinator applies it at its next tick" (exit 0) and the
Coordinator dropped the vote of a closed approval without a word in the audit log, while the
conversation showed "approved by ..." for it.

Each case runs the real ``plantcrew`` command (CliRunner) on a real SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.store import Approval, ApprovalVote, Store
from tests.api.conftest import seed_pending_approval


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'plant.db'}")
    yield s
    s.dispose()


def vote(store: Store, verb: str, approval_id: str, who: str, role: str) -> tuple[int, str]:
    res = CliRunner().invoke(
        app,
        ["approvals", verb, approval_id, "--as", who, "--role", role, "--db", store.url],
    )
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout + res.stderr


def votes(store: Store) -> list[tuple[str, str]]:
    with store.tx() as s:
        return [(v.approver, v.role) for v in s.exec(select(ApprovalVote)).all()]


@pytest.mark.parametrize("status", ["expired", "approved", "rejected"])
@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_vote_on_a_closed_approval_is_refused(store: Store, verb: str, status: str) -> None:
    appr = seed_pending_approval(store)
    with store.tx() as s:
        row = s.get(Approval, appr.id)
        assert row is not None
        row.status = status
        s.add(row)
    code, text = vote(store, verb, appr.id, "dave", "shift_supervisor")
    assert code == 2, text
    assert text.strip() == f"error: approval {appr.id} is {status}, not pending"
    assert votes(store) == []


def test_a_vote_past_the_deadline_is_refused(store: Store) -> None:
    # the run's checkpoint is at plant 1000 s; the approval's deadline was 910 s
    appr = seed_pending_approval(
        store, run={"config": {"scenario": {"name": "seeded"}}, "plant_time": 1000.0}
    )
    code, text = vote(store, "approve", appr.id, "dave", "shift_supervisor")
    assert code == 2, text
    assert f"approval {appr.id} closed at its deadline, plant 910 s" in text
    assert "too late to decide" in text
    assert votes(store) == []


def test_a_role_the_approval_does_not_allow_is_refused(store: Store) -> None:
    appr = seed_pending_approval(store)
    code, text = vote(store, "approve", appr.id, "mallory", "intern")
    assert code == 2, text
    assert text.strip() == (
        f"error: plant role 'intern' may not decide class-2 approval {appr.id}; "
        "allowed: shift_supervisor, operations_lead"
    )
    assert votes(store) == []


def test_a_second_vote_of_one_person_is_refused(store: Store) -> None:
    appr = seed_pending_approval(store)
    code, text = vote(store, "approve", appr.id, "dave", "shift_supervisor")
    assert code == 0, text
    assert f"approval of {appr.id} by dave (shift_supervisor) recorded" in text
    # not yet applied by the Coordinator: it waits
    code, text = vote(store, "reject", appr.id, "dave", "shift_supervisor")
    assert code == 2, text
    assert text.strip() == f"error: dave's decision on {appr.id} waits"
    # applied: dave is among the approval's decisions
    with store.tx() as s:
        row = s.get(Approval, appr.id)
        assert row is not None
        row.decisions = [{"approver": "dave", "role": "shift_supervisor", "approved": True}]
        s.add(row)
        for v in s.exec(select(ApprovalVote)).all():
            v.processed = True
            s.add(v)
    code, text = vote(store, "approve", appr.id, "dave", "shift_supervisor")
    assert code == 2, text
    assert text.strip() == f"error: dave has decided on {appr.id} already"
    # another person still may
    code, text = vote(store, "approve", appr.id, "erin", "operations_lead")
    assert code == 0, text
    assert votes(store) == [("dave", "shift_supervisor"), ("erin", "operations_lead")]
