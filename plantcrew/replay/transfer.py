"""Moving one run's records from one store to another (a re-executed fork into the
database of the run it forks).

Copied: the run row (with the fields given), its incidents, conversation log, tasks,
actions, approvals and the votes cast on them, model calls, dead letters, and its audit
entries, appended to the target's hash chain in their order (so the chain stays intact).
Not copied: lessons (a counterfactual run must not teach the crew's memory), outbox rows
(all published) and agent heartbeats. Everything is written in one transaction.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from plantcrew.store import (
    Action,
    Approval,
    ApprovalVote,
    AuditEntry,
    DeadLetterRecord,
    Incident,
    MessageRecord,
    ModelCall,
    Run,
    Store,
    TaskRecord,
    add_model_calls,
)
from plantcrew.store import audit as audit_log


def _fresh(row: Any, *, drop: str | None = None) -> Any:
    data = row.model_dump()
    if drop is not None:
        data.pop(drop, None)
    return type(row)(**data)


def transfer_run(source: Store, target: Store, run_id: str, **run_fields: Any) -> Run:
    """Copy run ``run_id`` from ``source`` to ``target`` (see module doc), setting
    ``run_fields`` on the run row; returns the new run row. Raises StoreError when the target
    refuses a row (e.g. the run is there already)."""
    run = source.get_run(run_id)
    with source.tx() as s:
        incidents = list(s.exec(select(Incident).where(col(Incident.run_id) == run_id)))
        inc_ids = [i.id for i in incidents]
        messages = list(
            s.exec(
                select(MessageRecord)
                .where(col(MessageRecord.run_id) == run_id)
                .order_by(col(MessageRecord.seq))
            )
        )
        tasks = list(s.exec(select(TaskRecord).where(col(TaskRecord.incident_id).in_(inc_ids))))
        actions = list(s.exec(select(Action).where(col(Action.run_id) == run_id)))
        approvals = list(s.exec(select(Approval).where(col(Approval.run_id) == run_id)))
        votes = list(
            s.exec(
                select(ApprovalVote)
                .where(col(ApprovalVote.approval_id).in_([a.id for a in approvals]))
                .order_by(col(ApprovalVote.seq))
            )
        )
        calls = list(
            s.exec(
                select(ModelCall).where(col(ModelCall.run_id) == run_id).order_by(col(ModelCall.id))
            )
        )
        dead = list(s.exec(select(DeadLetterRecord).where(col(DeadLetterRecord.run_id) == run_id)))
        entries = list(
            s.exec(
                select(AuditEntry)
                .where(col(AuditEntry.run_id) == run_id)
                .order_by(col(AuditEntry.seq))
            )
        )
    new_run = Run(**{**run.model_dump(), **run_fields})
    with target.tx() as t:
        t.add(new_run)
        for row in [*incidents, *tasks, *actions, *approvals, *dead]:
            t.add(_fresh(row))
        for m in messages:
            t.add(_fresh(m, drop="seq"))
        for v in votes:
            t.add(_fresh(v, drop="seq"))
        add_model_calls(t, [_fresh(c, drop="id") for c in calls])
        t.flush()
        for e in entries:
            audit_log.append(
                t,
                time=e.time,
                actor=e.actor,
                kind=e.kind,
                data=dict(e.data),
                run_id=e.run_id,
                incident_id=e.incident_id,
            )
    return new_run


__all__ = ["transfer_run"]
