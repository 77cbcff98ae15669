"""``Store``: the queries the crew, the runner and the CLI make of shared memory.

Functions that take a ``Session`` run inside the caller's transaction (so a state change and
the messages it causes commit together); methods without one open their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from plantcrew.errors import ConflictError, NotFoundError
from plantcrew.messages import Message, ModelCallInfo
from plantcrew.settings import redacted_url
from plantcrew.store import audit, heartbeats
from plantcrew.store.audit import ChainBreak
from plantcrew.store.db import Database
from plantcrew.store.deferred import MESSAGE, deferred, message_row
from plantcrew.store.rows import insert_rows, insert_stmt, new_row, read_row, values_of
from plantcrew.store.spend import add_spend, deltas_of
from plantcrew.store.tables import (
    Action,
    AgentRecord,
    Approval,
    ApprovalVote,
    DeadLetterRecord,
    Incident,
    Lesson,
    MessageRecord,
    ModelCall,
    OutboxEntry,
    Run,
)

INCIDENT = Incident.__table__  # type: ignore[attr-defined]
_INCIDENT_FIELDS = [c.name for c in INCIDENT.columns if c.name not in ("id", "version")]
# built once: executed with parameters, its compiled form comes from SQLAlchemy's cache (a new
# ``update(...).values(**fields)`` for each save cost 3-4 times the CPU: a fresh cache key over
# every value, the incident's JSON included)
_SAVE_INCIDENT = (
    update(INCIDENT)
    .where(INCIDENT.c.id == bindparam("old_id"), INCIDENT.c.version == bindparam("old_version"))
    .values({name: bindparam(name) for name in [*_INCIDENT_FIELDS, "version"]})
)


class Store(Database):
    """Shared memory on SQLite (default) or PostgreSQL; see ``plantcrew.store.tables``."""

    # ---- runs ----------------------------------------------------------------------------
    def create_run(self, run: Run) -> Run:
        with self.tx() as s:
            s.add(run)
        return run

    def get_run(self, run_id: str) -> Run:
        with self.tx() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFoundError(f"no run {run_id!r} in {redacted_url(self.url)}")
            return run

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.tx() as s:
            s.execute(update(Run).where(col(Run.id) == run_id).values(**fields))

    def runs(self, limit: int = 50, offset: int = 0) -> list[Run]:
        """Runs, newest start first (ties by id, so pages by ``offset`` neither repeat nor skip)."""
        with self.tx() as s:
            q = select(Run).order_by(col(Run.started_at).desc(), col(Run.id).desc())
            return list(s.exec(q.offset(offset).limit(limit)))

    # ---- incidents -----------------------------------------------------------------------
    def incidents(self, run_id: str | None = None) -> list[Incident]:
        with self.tx() as s:
            q = select(Incident).order_by(col(Incident.opened_at), col(Incident.id))
            if run_id is not None:
                q = q.where(col(Incident.run_id) == run_id)
            return list(s.exec(q))

    def get_incident(self, incident_id: str) -> Incident:
        with self.tx() as s:
            inc = s.get(Incident, incident_id)
            if inc is None:
                raise NotFoundError(f"no incident {incident_id!r}")
            return inc

    # ---- the conversation log, outbox and dead letters -------------------------------------
    def messages(
        self,
        run_id: str,
        *,
        correlation_id: str | None = None,
        source: str | None = None,
        types: Sequence[str] = (),
    ) -> list[MessageRecord]:
        with self.tx() as s:
            q = select(MessageRecord).where(col(MessageRecord.run_id) == run_id)
            if correlation_id:
                q = q.where(col(MessageRecord.correlation_id) == correlation_id)
            if source:
                q = q.where(col(MessageRecord.source) == source)
            if types:
                q = q.where(col(MessageRecord.type).in_(list(types)))
            return list(s.exec(q.order_by(col(MessageRecord.seq))))

    def pending_outbox(self, limit: int = 500) -> list[OutboxEntry]:
        with self.tx() as s:
            q = select(OutboxEntry).where(col(OutboxEntry.published).is_(False))
            return list(s.exec(q.order_by(col(OutboxEntry.seq)).limit(limit)))

    def mark_published(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self.tx() as s:
            s.execute(
                update(OutboxEntry)
                .where(col(OutboxEntry.seq).in_(list(seqs)))
                .values(published=True)
            )

    def record_dead_letter(self, msg: Message) -> bool:
        """Keep a ``message.dead`` message; False when it was recorded already."""
        from plantcrew.messages import DeadLetter

        assert isinstance(msg.payload, DeadLetter)
        p = msg.payload
        with self.tx() as s:
            if s.get(DeadLetterRecord, str(msg.id)) is not None:
                return False
            s.add(
                DeadLetterRecord(
                    id=str(msg.id),
                    run_id=msg.run_id,
                    original_id=p.original_id,
                    original_subject=p.original_subject,
                    reason=p.reason,
                    attempts=p.attempts,
                    quarantined=p.quarantined,
                    raw=p.raw,
                    time=msg.time,
                )
            )
            return True

    def dead_letters(self, run_id: str | None = None) -> list[DeadLetterRecord]:
        with self.tx() as s:
            q = select(DeadLetterRecord)
            if run_id is not None:
                q = q.where(col(DeadLetterRecord.run_id) == run_id)
            return list(s.exec(q.order_by(col(DeadLetterRecord.time))))

    # ---- actions and approvals ---------------------------------------------------------------
    def actions(self, run_id: str | None = None, incident_id: str | None = None) -> list[Action]:
        with self.tx() as s:
            q = select(Action)
            if run_id is not None:
                q = q.where(col(Action.run_id) == run_id)
            if incident_id is not None:
                q = q.where(col(Action.incident_id) == incident_id)
            return list(s.exec(q.order_by(col(Action.id))))

    def approvals(
        self,
        *,
        status: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Approval]:
        """Approvals, oldest request first (ties by id); ``limit``/``offset`` for a page."""
        with self.tx() as s:
            q = select(Approval)
            if status is not None:
                q = q.where(col(Approval.status) == status)
            if run_id is not None:
                q = q.where(col(Approval.run_id) == run_id)
            q = q.order_by(col(Approval.requested_at), col(Approval.id)).offset(offset)
            return list(s.exec(q.limit(limit) if limit is not None else q))

    def get_approval(self, approval_id: str) -> Approval:
        with self.tx() as s:
            appr = s.get(Approval, approval_id)
            if appr is None:
                raise NotFoundError(f"no approval {approval_id!r}")
            return appr

    def cast_vote(
        self, approval_id: str, *, approver: str, role: str, approved: bool, reason: str = ""
    ) -> ApprovalVote:
        """Submit a person's decision; the Coordinator applies it (and checks the role)."""
        with self.tx() as s:
            if s.get(Approval, approval_id) is None:
                raise NotFoundError(f"no approval {approval_id!r}")
            vote = ApprovalVote(
                approval_id=approval_id,
                approver=approver,
                role=role,
                approved=approved,
                reason=reason,
            )
            s.add(vote)
            return vote

    # ---- model calls, lessons ---------------------------------------------------------------
    def model_calls(self, run_id: str | None = None) -> list[ModelCall]:
        with self.tx() as s:
            q = select(ModelCall)
            if run_id is not None:
                q = q.where(col(ModelCall.run_id) == run_id)
            return list(s.exec(q.order_by(col(ModelCall.id))))

    def lessons(self) -> list[Lesson]:
        with self.tx() as s:
            return list(s.exec(select(Lesson).order_by(col(Lesson.id))))

    def add_lesson(self, lesson: Lesson) -> Lesson:
        with self.tx() as s:
            s.add(lesson)
            return lesson

    # ---- agents' last heartbeats (plantcrew.store.heartbeats) --------------------------------
    def record_agents(
        self, rows: Sequence[AgentRecord], *, forget_before: datetime | None = None
    ) -> None:
        """Upsert ``rows`` into the ``agent`` table (the newest ``last_seen`` of each agent
        stays) and, with ``forget_before`` (aware), delete the rows of agents not heard since
        then, in one transaction. Raises StoreError (StoreUnavailable: the database cannot
        serve now)."""
        with self.tx() as s:
            heartbeats.record_agents(s, rows)
            if forget_before is not None:
                heartbeats.forget_agents(s, forget_before)

    def agents(self) -> list[AgentRecord]:
        """Every agent of the ``agent`` table, by role then agent id."""
        with self.tx() as s:
            return heartbeats.agent_rows(s)

    # ---- audit -------------------------------------------------------------------------------
    def audit(
        self,
        *,
        time: datetime,
        actor: str,
        kind: str,
        data: dict[str, Any],
        run_id: str | None = None,
        incident_id: str | None = None,
    ) -> None:
        with self.tx() as s:
            audit.append(
                s,
                time=time,
                actor=actor,
                kind=kind,
                data=data,
                run_id=run_id,
                incident_id=incident_id,
            )

    def verify_audit(self) -> list[ChainBreak]:
        with self.tx() as s:
            return audit.verify_chain(s)


# ---- helpers used inside a caller's transaction ----------------------------------------------
def record_message(s: Session, msg: Message, plant_time: float) -> bool:
    """Append ``msg`` to the conversation log; False when its id is there already
    (:func:`record_messages` with one message)."""
    return record_messages(s, [(msg, plant_time)])[0]


def record_messages(s: Session, messages: Sequence[tuple[Message, float]]) -> list[bool]:
    """Append each ``(message, plant_time)`` to the conversation log with one statement
    (insert unless the id is there): per message, True when it was appended now, False when
    its id was there already (logged before, or earlier in ``messages``). What the
    transaction queued before is written first, so the conversation keeps its order. A
    transaction that already inserted an id and has not committed yet makes this one wait
    for its outcome (PostgreSQL)."""
    work = deferred(s)
    if work is not None:
        work.write_messages(s)  # what the transaction queued before comes first
    first: dict[str, int] = {}
    for i, (msg, _) in enumerate(messages):
        first.setdefault(str(msg.id), i)
    rows = [message_row(messages[i][0], messages[i][1]) for i in first.values()]
    if not rows:
        return []
    stmt = insert_stmt(s, MESSAGE, if_new_key="id", returning="id")
    added = {str(r[0]) for r in s.execute(stmt, rows)}
    return [first[str(m.id)] == i and str(m.id) in added for i, (m, _) in enumerate(messages)]


def add_outbox(s: Session, msg: Message, plant_time: float) -> None:
    """Queue ``msg`` for publishing after commit, and log it in the conversation.

    In a transaction of ``Database.tx`` both rows are written when it commits, with the
    other messages it queued (see :mod:`plantcrew.store.deferred`, which also says how the
    caller learns the rows' ``seq``); elsewhere at once. A message id logged before makes the
    transaction fail (the outbox's ``message_id`` is unique).
    """
    work = deferred(s)
    if work is not None:
        work.messages.append((msg, plant_time))
        return
    body = msg.to_bytes().decode()
    s.execute(insert_stmt(s, MESSAGE), message_row(msg, plant_time, body))
    s.add(OutboxEntry(message_id=str(msg.id), subject=msg.subject, body=body))


def record_model_calls(
    s: Session, calls: Sequence[ModelCallInfo], *, msg: Message, agent: str, task_id: str | None
) -> None:
    """Store the model calls behind an agent's answer."""
    day = msg.time.date().isoformat()
    rows = [
        new_row(
            ModelCall,
            run_id=msg.run_id,
            incident_id=msg.correlation_id,
            task_id=task_id,
            message_id=str(msg.id),
            agent=agent,
            model_group=c.model_group,
            deployment=c.deployment,
            model=c.model,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            latency_ms=c.latency_ms,
            cost_usd=c.cost_usd,
            fallback=c.fallback,
            degraded_reason=c.degraded_reason,
            repaired=c.repaired,
            ok=c.ok,
            error=c.error,
            prompt=json.loads(json.dumps(c.prompt, default=str)),
            response=c.response,
            day=day,
        )
        for c in calls
    ]
    add_model_calls(s, rows)


def add_model_calls(s: Session, rows: Sequence[ModelCall]) -> None:
    """Insert ``rows`` into ``model_call`` and add their cost to the running spend of their
    day, in the caller's transaction (:mod:`plantcrew.store.spend`; in a transaction of
    ``Database.tx`` the spend is written just before it commits, elsewhere at once). Every
    ``model_call`` row is written through here, so ``model_spend`` keeps their sums."""
    if not rows:
        return
    insert_rows(s, rows)
    calls = ((r.day, r.agent, r.cost_usd) for r in rows)
    work = deferred(s)
    if work is not None:
        deltas_of(calls, into=work.spend)
    else:
        add_spend(s, deltas_of(calls))


def save_incident(s: Session, inc: Incident) -> None:
    """Write ``inc`` back if nobody changed it since it was read (optimistic locking).

    Raises ConflictError when the stored version differs from ``inc.version``.
    """
    values = values_of(inc, _INCIDENT_FIELDS)  # no deep copy of data
    values.update(old_id=inc.id, old_version=inc.version, version=inc.version + 1)
    res = s.execute(_SAVE_INCIDENT, values)
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError(f"incident {inc.id} changed since it was read (version {inc.version})")
    inc.version += 1


def read_incident(s: Session, incident_id: str) -> Incident | None:
    """The incident ``incident_id`` as stored now (None when there is none), detached from
    the session (:func:`~plantcrew.store.rows.read_row`), to change and ``save_incident`` it.
    Read with Core: this costs about a third of the CPU of ``s.get`` and ``expunge``."""
    return read_row(s, Incident, incident_id)


def load_incident(s: Session, incident_id: str) -> Incident:
    """:func:`read_incident`; NotFoundError when there is no such incident."""
    inc = read_incident(s, incident_id)
    if inc is None:
        raise NotFoundError(f"no incident {incident_id!r}")
    return inc
