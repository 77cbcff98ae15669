"""The Coordinator: owns each incident's state machine and routes its steps by capability.

States: ``diagnosing → proposing → assessing → [awaiting_approval] → actuating → verifying →
reviewing → resolved``; any step can end in ``escalated`` (handed to a person), also via
``reviewing``. Every event is handled in one database transaction that records the message in
the conversation log (a message id seen before is skipped: idempotent), changes the incident
(optimistic locking), appends audit entries and queues the messages it causes in the outbox;
the relay publishes them after commit.

Timeouts run on the plant clock in :meth:`tick`: a task whose agent does not answer is
reassigned (``attempt`` + 1) and, after ``max_attempts``, escalated; a pending approval past
its deadline expires (safe default: nothing actuates); an action whose effect does not show in
the telemetry within ``verify_timeout_s`` escalates. With no live agent for a capability the
incident goes to a person at once, and so it does when a task is over the bus's
``max_message_bytes``: nothing is queued, the reason names the task, its size and the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, case, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from plantcrew.bus import Bus, DurableOptions, Subscription
from plantcrew.bus.base import check_size
from plantcrew.crews.config import CoordinatorSettings
from plantcrew.crews.known import KnownIncidents, StaleIncident
from plantcrew.crews.outbox import OutboxRelay
from plantcrew.crews.recall import LessonRecall
from plantcrew.crews.registry import CapabilityRegistry
from plantcrew.crews.warmup import WarmUp
from plantcrew.detect.memory import signature_of
from plantcrew.errors import ConflictError, MessageTooLarge
from plantcrew.llm.budget import Budgets
from plantcrew.messages import (
    ActionProposal,
    ActionResult,
    AgentHeartbeat,
    AnomalyCleared,
    AnomalyDetected,
    ApprovalDecision,
    ApprovalRequest,
    Capability,
    DeadLetter,
    Diagnosis,
    IncidentReview,
    IncidentUpdated,
    Message,
    SafetyDecision,
    SafetyVerdict,
    Subjects,
    Task,
    TaskFailed,
    stricter,
)
from plantcrew.plant.clock import Clock
from plantcrew.store import (
    Action,
    Approval,
    ApprovalVote,
    Incident,
    Lesson,
    MessageRecord,
    Store,
    TaskRecord,
    add_outbox,
    load_incident,
    read_incident,
    record_message,
    record_model_calls,
    save_incident,
)
from plantcrew.store import audit as audit_log
from plantcrew.store.costs import budget_spend
from plantcrew.store.deferred import OutboxRow, committed_outbox
from plantcrew.store.rows import detached, insert_rows, new_row, read_row, update_row
from plantcrew.store.tokens import issue_token

log = structlog.get_logger("plantcrew.coordinator")
SOURCE = "coordinator"
ACTIVE = (
    "open",
    "diagnosing",
    "proposing",
    "assessing",
    "awaiting_approval",
    "actuating",
    "verifying",
    "reviewing",
)
# the roles that reason through a model, whose steps carry their budget's spend
REASONING_ROLE = {
    Capability.DIAGNOSE: "diagnostic",
    Capability.PROPOSE_ACTION: "operator",
    Capability.ASSESS_SAFETY: "safety",  # its optional model review
    Capability.REVIEW: "reviewer",
}


def _no_looser_than_rules(p: SafetyDecision) -> SafetyDecision:
    """``p`` with a verdict at least as strict as its rules' (defence in depth: the Safety
    Officer already guarantees it; a decision that breaks it is logged and tightened)."""
    if p.rule_verdict is None or stricter(p.rule_verdict, p.verdict) is p.verdict:
        return p
    log.error(
        "safety decision looser than its rules: the rules' verdict applies",
        action_id=p.action_id,
        verdict=p.verdict.value,
        rule_verdict=p.rule_verdict.value,
    )
    return p.model_copy(
        update={
            "verdict": p.rule_verdict,
            "reasons": [*p.reasons, f"verdict {p.verdict.value} overruled by the rules"],
        }
    )


TASK = TaskRecord.__table__  # type: ignore[attr-defined]
INCIDENT = Incident.__table__  # type: ignore[attr-defined]
# built once, executed with parameters (SQLAlchemy's compiled cache; see plantcrew.store.rows)
_TASK_STATUS = (
    update(TASK).where(TASK.c.id == bindparam("task_id")).values(status=bindparam("status"))
)
# an active incident of a run on a device (at most one: the Coordinator opens no second one)
_ACTIVE_ON_DEVICE = sa_select(INCIDENT).where(
    INCIDENT.c.run_id == bindparam("run_id"),
    INCIDENT.c.device_id == bindparam("device_id"),
    INCIDENT.c.status.in_(ACTIVE),
)
_ACTIVE_IN_RUN = sa_select(INCIDENT).where(
    INCIDENT.c.run_id == bindparam("run_id"), INCIDENT.c.status.in_(ACTIVE)
)
# a run's incidents, and the id of its active one on a device (at most one), in one read
_ACTIVE_HERE = and_(INCIDENT.c.device_id == bindparam("device_id"), INCIDENT.c.status.in_(ACTIVE))
_OPENED_IN_RUN = sa_select(func.count(), func.max(case((_ACTIVE_HERE, INCIDENT.c.id)))).where(
    INCIDENT.c.run_id == bindparam("run_id")
)
ACTION = Action.__table__  # type: ignore[attr-defined]
# what a review task says of an incident's actions
VOTE = ApprovalVote.__table__  # type: ignore[attr-defined]
APPROVAL = Approval.__table__  # type: ignore[attr-defined]
# people's votes on a run's approvals not applied yet, oldest first
_VOTES_TO_APPLY = (
    sa_select(VOTE)
    .join(APPROVAL, APPROVAL.c.id == VOTE.c.approval_id)
    .where(VOTE.c.processed.is_(False), APPROVAL.c.run_id == bindparam("run_id"))
    .order_by(VOTE.c.seq)
)
_VOTE_APPLIED = update(VOTE).where(VOTE.c.seq == bindparam("vote_seq")).values(processed=True)
_ACTIONS_OF = sa_select(
    ACTION.c.device_id, ACTION.c.command, ACTION.c.parameters, ACTION.c.status
).where(ACTION.c.incident_id == bindparam("incident_id"))


TRACEPARENT_BYTES = len('"00-' + "0" * 32 + "-" + "0" * 16 + '-00"') - len("null")
"""Bytes a publish adds to a message whose ``traceparent`` is null when it stamps the current
trace context on it (``plantcrew.tracing.stamp``)."""
FULL_TICK_S = 5.0
"""Plant seconds a Coordinator trusts its last full tick for: it skips the database work of
ticks while nothing can be due; another process's changes to the run are seen within this."""
STATUS_FOR = {
    Capability.DIAGNOSE: "diagnosing",
    Capability.PROPOSE_ACTION: "proposing",
    Capability.ASSESS_SAFETY: "assessing",
    Capability.ACTUATE: "actuating",
    Capability.REVIEW: "reviewing",
}


class Coordinator:
    """Routes incidents' steps to live agents by capability (see module doc)."""

    def __init__(
        self,
        bus: Bus,
        store: Store,
        clock: Clock,
        *,
        run_id: str,
        run_started: datetime,
        settings: CoordinatorSettings | None = None,
        delivery: DurableOptions | None = None,
        on_message: Callable[[Message], None] | None = None,
        budgets: Budgets | None = None,
        recall: LessonRecall | None = None,
    ) -> None:
        self.bus, self.store, self.clock, self.run_id = bus, store, clock, run_id
        self.recall = recall or LessonRecall()
        self.budgets = budgets
        self.run_started = run_started
        self.settings = settings or CoordinatorSettings()
        self.delivery = delivery or DurableOptions()
        self.registry = CapabilityRegistry(self.settings.agent_ttl_s)
        self.relay = OutboxRelay(store, bus)
        self.on_message = on_message
        # the active incidents as this object last wrote them: a task result is checked
        # against them without reading its incident (see plantcrew.crews.known)
        self.known = KnownIncidents(ACTIVE)
        # set before start (the in-process crew does): no event nor tick before it has heard
        # agents of every step it routes (:mod:`plantcrew.crews.warmup`)
        self.warm_up: WarmUp | None = None
        self._warming: asyncio.Task[None] | None = None
        self._subs: list[Subscription] = []
        # what the last full tick learnt (see :meth:`apply_tick`): nothing is due before
        # ``_quiet_until`` plant s, valid while no event has been applied since (``_applied``)
        self._applied = 0
        self._quiet_until: float | None = None
        self._quiet_as_of = -1

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe, then publish whatever the outbox still holds (after a crash). With a
        :attr:`warm_up`, events and ticks wait for it (its clock starts now)."""
        if self.warm_up is not None:
            self._warming = asyncio.create_task(self.warm_up.run(), name="coordinator-warm-up")
        self._subs.append(await self.bus.subscribe(Subjects.CONTROL, self._on_control))
        self._subs.append(
            await self.bus.consume(
                Subjects.EVENTS, self._on_event, group="coordinator", options=self.delivery
            )
        )
        self._subs.append(
            await self.bus.consume(
                Subjects.DLQ, self._on_dead, group="dlq-recorder", options=self.delivery
            )
        )
        await self.relay.flush()

    async def recover(self) -> int:
        """After a restart on a bus that lost its messages (``memory://``), publish again the
        current task of every active incident of this run. Agents are idempotent (results of
        stale or repeated tasks are ignored; an action runs at most once); brokers drop the
        repeat by message id. Returns how many tasks were re-published."""
        with self.store.tx() as s:
            rows = s.exec(
                select(MessageRecord)
                .join(TaskRecord, col(TaskRecord.message_id) == col(MessageRecord.id))
                .join(Incident, col(Incident.current_task_id) == col(TaskRecord.id))
                .where(col(Incident.run_id) == self.run_id, col(Incident.status).in_(ACTIVE))
            ).all()
        for row in rows:
            await self.bus.publish(Message.from_bytes(row.body))
        log.info("recovered", run=self.run_id, tasks=len(rows))
        return len(rows)

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    def plant_time(self, msg: Message) -> float:
        """Plant seconds of ``msg`` since the run started."""
        return max(0.0, (msg.time - self.run_started).total_seconds())

    # ---- inputs --------------------------------------------------------------------------
    async def _on_control(self, msg: Message) -> None:
        if isinstance(msg.payload, AgentHeartbeat):
            self.registry.heard(msg.payload, self.clock.t)
            if self.warm_up is not None:
                live = [c for c in Capability if self.registry.live(c, self.clock.t)]
                self.warm_up.heard(live, msg.payload.agent_id)

    async def _on_dead(self, msg: Message) -> None:
        if isinstance(msg.payload, DeadLetter) and self.store.record_dead_letter(msg):
            log.warning(
                "dead letter", subject=msg.payload.original_subject, reason=msg.payload.reason
            )

    async def handle_event(self, msg: Message) -> None:
        """Handle one ``crew.events`` message of this run (what the subscription does; a host
        serving many runs from one subscription calls it)."""
        await self._on_event(msg)

    def apply_event(self, msg: Message) -> bool:
        """The transaction of one event, without publishing what it queued in the outbox
        (the caller flushes the relay). False when the message was processed before. A host
        may run it in a worker thread: it touches only the database and this object."""
        return self.apply(msg) is not None

    def apply(self, msg: Message) -> list[OutboxRow] | None:
        """:meth:`apply_event`, returning the outbox rows the transaction committed (for the
        caller to publish: :meth:`BatchedOutboxRelay.publish_rows`), or None when the message
        was processed before."""
        try:
            return self._apply(msg)
        except StaleIncident as exc:  # forgotten: the incident is read this time
            log.info("incident changed elsewhere: event applied again", error=str(exc))
            return self._apply(msg)

    def _apply(self, msg: Message) -> list[OutboxRow] | None:
        with self.store.tx() as s:
            if not self.apply_in(s, msg):
                return None  # processed before: acknowledge and skip
            committed = committed_outbox(s)  # filled in when the transaction commits
        self.applied()
        return committed

    def apply_in(self, s: Session, msg: Message) -> bool:
        """Apply one event inside the caller's transaction ``s``: log it in the conversation,
        then :meth:`handle_in`; False (and nothing done) when the message was processed
        before. The caller calls :meth:`applied` once the transaction committed."""
        if not record_message(s, msg, self.plant_time(msg)):
            return False
        self.handle_in(s, msg)
        return True

    def handle_in(self, s: Session, msg: Message) -> None:
        """The state change of event ``msg``, already logged in the conversation in ``s``
        (which may hold other events' work: :class:`~plantcrew.crews.group_commit.GroupCommit`
        logs a batch's events with one statement). Touches only the database, and
        ``on_message``."""
        if self.on_message is not None:
            self.on_message(msg)
        handler = self._handlers().get(msg.type)
        if handler is not None:
            handler(s, msg, self.plant_time(msg))

    def applied(self) -> None:
        """Say that an event's transaction committed: deadlines may have changed, so the next
        tick looks again (:meth:`quiet`)."""
        self._applied += 1

    async def _on_event(self, msg: Message) -> None:
        if self.warm_up is not None:
            await self.warm_up.wait()  # its step is routed to an agent heard
        if self.apply_event(msg):
            await self.relay.flush()

    def _handlers(self) -> dict[str, Callable[[Session, Message, float], None]]:
        return {
            "anomaly.detected": self._anomaly,
            "anomaly.cleared": self._cleared,
            "diagnosis.made": self._diagnosis,
            "action.proposed": self._proposal,
            "safety.decided": self._safety,
            "action.executed": self._executed,
            "review.completed": self._review,
            "task.failed": self._task_failed,
            "approval.decided": self._approval_message,
        }

    # ---- helpers -------------------------------------------------------------------------
    def _now(self) -> datetime:
        return self.clock.now()

    def _emit(
        self,
        s: Session,
        payload: Any,
        subject: str,
        *,
        correlation_id: str,
        cause: Message | None,
        pt: float,
        source: str = SOURCE,
    ) -> Message:
        msg = self._message(
            payload, subject, correlation_id=correlation_id, cause=cause, source=source
        )
        return self._queue(s, msg, pt)

    def _message(
        self,
        payload: Any,
        subject: str,
        *,
        correlation_id: str,
        cause: Message | None,
        source: str = SOURCE,
    ) -> Message:
        fields: dict[str, Any] = {
            "run_id": self.run_id,
            "correlation_id": correlation_id,
            "time": self._now(),
        }
        if cause is not None:
            fields.update(causation_id=cause.id, traceparent=cause.traceparent)
        return Message.new(payload, source=source, subject=subject, **fields)

    def _queue(self, s: Session, msg: Message, pt: float) -> Message:
        add_outbox(s, msg, pt)
        if self.on_message is not None:
            self.on_message(msg)
        return msg

    def _too_large(self, msg: Message) -> MessageTooLarge | None:
        """The bus's refusal of ``msg`` (its serialized bytes, plus the ``traceparent`` a
        publish may add to a message without one: :data:`TRACEPARENT_BYTES`) when it is over
        the bus's ``max_message_bytes``; None when it fits."""
        size = len(msg.to_bytes()) + (TRACEPARENT_BYTES if msg.traceparent is None else 0)
        try:
            check_size(msg.subject, size, self.bus.max_message_bytes)  # the bus's own check
        except MessageTooLarge as exc:
            return exc
        return None

    def _audit(
        self, s: Session, kind: str, inc: Incident, actor: str = SOURCE, **data: Any
    ) -> None:
        audit_log.append_deferred(
            s,
            time=self._now(),
            actor=actor,
            kind=kind,
            data=data,
            run_id=inc.run_id,
            incident_id=inc.id,
        )

    def _set_status(
        self, s: Session, inc: Incident, status: str, reason: str, pt: float, cause: Message | None
    ) -> None:
        inc.status = status
        self._emit(
            s,
            IncidentUpdated(incident_id=inc.id, status=status, reason=reason),
            Subjects.INCIDENTS,
            correlation_id=inc.id,
            cause=cause,
            pt=pt,
        )

    def _dispatch(
        self,
        s: Session,
        inc: Incident,
        cap: Capability,
        data: dict[str, Any],
        pt: float,
        cause: Message | None,
        attempt: int = 1,
    ) -> None:
        """Route the next step to a live agent with ``cap``, or hand the incident to a person."""
        if not self.registry.live(cap, self.clock.t):
            if cap is Capability.REVIEW:
                self._close(s, inc, pt, cause, note="no live reviewer: review skipped")
                return
            self._escalate(s, inc, f"no live agent can {cap.value}", pt, cause)
            return
        task_id = f"{inc.id}-{cap.value}-{attempt}"
        deadline = pt + self.settings.task_timeout_s
        role = REASONING_ROLE.get(cap)
        if role is not None and self.budgets is not None and self.budgets.any:
            spend = budget_spend(s, incident_id=inc.id, day=self._now().date(), agent=role)
            data = {
                **data,
                "budget": self.budgets.status(spend, agent=role).model_dump(mode="json"),
            }
        task = Task(
            task_id=task_id,
            incident_id=inc.id,
            capability=cap,
            attempt=attempt,
            deadline_ts=deadline,
            input=data,
        )
        msg = self._message(task, Subjects.tasks(cap), correlation_id=inc.id, cause=cause)
        too_large = self._too_large(msg)
        if too_large is not None:
            # the relay could only dead-letter it: no agent would answer, each attempt
            # would wait out the task timeout and say "no answer" for a reason known now
            log.error("task too large: not sent", task=task_id, size=too_large.size)
            inc.current_task_id = None
            why = f"{cap.value} task {task_id} not sent: {too_large}"
            if cap is Capability.REVIEW:
                self._close(s, inc, pt, cause, note=f"review not done: {why}")
            else:
                self._escalate(s, inc, why, pt, cause)
            return
        self._queue(s, msg, pt)
        record = new_row(
            TaskRecord,
            id=task_id,
            incident_id=inc.id,
            capability=cap.value,
            attempt=attempt,
            message_id=str(msg.id),
            assigned_at=pt,
            deadline_at=deadline,
        )
        insert_rows(s, [record])
        inc.current_task_id = task_id
        inc.data = {**inc.data, "task_input": data}
        self._set_status(s, inc, STATUS_FOR[cap], f"{cap.value} (attempt {attempt})", pt, cause)

    def _current(self, s: Session, payload: Any) -> Incident | None:
        """The incident a task result belongs to, if the result answers its current task.
        Every caller saves the incident it gets (:meth:`_save`): the incident this object
        knows is used unread, and that save's version check says whether it was stale."""

        def answered(inc: Incident | None) -> bool:
            return (
                inc is not None and inc.current_task_id == payload.task_id and inc.status in ACTIVE
            )

        inc = self.known.get(s, payload.incident_id)
        if answered(inc):
            self.known.use(s, payload.incident_id)
        else:  # the database says whether the result is stale
            inc = read_incident(s, payload.incident_id)
            if not answered(inc):
                log.info("stale result ignored", task=payload.task_id, type=payload.kind)
                return None
        assert inc is not None
        status = "failed" if isinstance(payload, TaskFailed) else "done"
        s.execute(_TASK_STATUS, {"task_id": payload.task_id, "status": status})
        inc.current_task_id = None
        return inc

    def _save(self, s: Session, inc: Incident) -> None:
        """``save_incident``, and know the incident as saved. Raises StaleIncident when it was
        a known copy that someone changed since (forgotten: applied again, it is read)."""
        try:
            save_incident(s, inc)
        except ConflictError as exc:
            if not self.known.used(s, inc.id):
                raise
            self.known.forget(inc.id)
            raise StaleIncident(f"{exc}: another process or transaction wrote it") from exc
        self.known.wrote(s, inc)

    def _escalate(
        self, s: Session, inc: Incident, reason: str, pt: float, cause: Message | None
    ) -> None:
        inc.outcome = "escalated"
        inc.escalation_reason = reason
        self._audit(s, "incident.escalated", inc, reason=reason)
        self._revoke_unused_approval(s, inc)
        self._review_or_close(s, inc, pt, cause)

    def _revoke_unused_approval(self, s: Session, inc: Incident) -> None:
        """An incident handed to a person leaves no approval that can still actuate: an
        actuate task still queued or redelivered (its worker back from a stall) would run the
        command behind that person's back. The action's row is locked first, as
        ``begin_execution`` does, so a claim either came before (the approval is consumed and
        stays so) or finds the approval expired."""
        action_id = inc.data.get("action_id")
        if not action_id:
            return
        action = read_row(s, Action, action_id, lock=True)
        approval = read_row(s, Approval, f"apr-{action_id}", lock=True)
        if action is None or approval is None:
            return
        if approval.status != "approved" or approval.consumed_at is not None:
            return
        approval.status = "expired"
        update_row(s, approval, "status")
        if action.status == "approved":
            action.status = "expired"
            update_row(s, action, "status")
        self._audit(s, "approval.revoked", inc, approval_id=approval.id, action_id=action.id)

    def _resolve(
        self, s: Session, inc: Incident, at: float, pt: float, cause: Message | None
    ) -> None:
        inc.outcome = "resolved"
        inc.resolved_at = at
        self._audit(s, "incident.resolved", inc, resolved_at=at)
        self._review_or_close(s, inc, pt, cause)

    def _review_or_close(self, s: Session, inc: Incident, pt: float, cause: Message | None) -> None:
        actions = s.execute(_ACTIONS_OF, {"incident_id": inc.id}).all()
        facts = {
            "incident_id": inc.id,
            "device_id": inc.device_id,
            "root_cause": inc.root_cause,
            "confidence": inc.confidence,
            "outcome": inc.outcome,
            "escalation_reason": inc.escalation_reason,
            "detected_at": inc.detected_at,
            "resolved_at": inc.resolved_at,
            "deviations": inc.anomaly.get("deviations", []),
            "actions": [
                {
                    "device_id": a.device_id,
                    "command": a.command,
                    "parameters": a.parameters,
                    "status": a.status,
                }
                for a in actions
            ],
        }
        self._dispatch(s, inc, Capability.REVIEW, facts, pt, cause)

    def _close(
        self, s: Session, inc: Incident, pt: float, cause: Message | None, note: str = ""
    ) -> None:
        inc.closed_at = pt
        inc.current_task_id = None
        if note:
            inc.data = {**inc.data, "note": note}
        self._set_status(
            s, inc, inc.outcome or "escalated", note or (inc.escalation_reason or ""), pt, cause
        )

    @staticmethod
    def _active_on(s: Session, run_id: str, device_id: str) -> Incident | None:
        """The active incident of ``run_id`` on ``device_id`` (detached), if any."""
        row = s.execute(_ACTIVE_ON_DEVICE, {"run_id": run_id, "device_id": device_id}).first()
        return None if row is None else detached(Incident, row._mapping)

    # ---- the state machine ---------------------------------------------------------------
    def _anomaly(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, AnomalyDetected)
        run_id = msg.run_id or self.run_id
        n, active_id = s.execute(_OPENED_IN_RUN, {"run_id": run_id, "device_id": p.device_id}).one()
        if active_id is not None:
            # with the version check like every change of an incident: an anomaly event is
            # keyed by run, not incident, so it can run beside a step of this incident
            active = load_incident(s, active_id)
            active.data = {**active.data, "anomalies": active.data.get("anomalies", 1) + 1}
            self._save(s, active)
            return
        anomaly = p.model_dump(mode="json")
        inc = new_row(
            Incident,
            id=f"inc-{run_id[-8:]}-{n + 1}",
            run_id=run_id,
            device_id=p.device_id,
            status="open",
            detected_at=p.ts,
            opened_at=pt,
            anomaly=anomaly,
            data={"anomalies": 1},
        )
        self._audit(s, "incident.opened", inc, device_id=p.device_id, score=p.score)
        lessons = self.recall.lessons(s, self.settings.max_lessons, p.deviations)
        self._dispatch(
            s, inc, Capability.DIAGNOSE, {"anomaly": anomaly, "lessons": lessons}, pt, msg
        )
        # written once, as it is now (nothing read it meanwhile): the row an insert at the
        # start and a save here made, version 2 included, in one statement instead of two
        inc.version += 1
        insert_rows(s, [inc])
        self.known.wrote(s, inc)

    def _cleared(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, AnomalyCleared)
        inc = self._active_on(s, msg.run_id or self.run_id, p.device_id)
        if inc is None:
            return
        inc.data = {**inc.data, "cleared_at": p.ts}
        if inc.status == "verifying":
            self._resolve(s, inc, p.ts, pt, msg)
        self._save(s, inc)

    def _diagnosis(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, Diagnosis)
        inc = self._current(s, p)
        if inc is None:
            return
        record_model_calls(s, p.model_calls, msg=msg, agent=p.agent_id, task_id=p.task_id)
        inc.root_cause, inc.confidence = p.root_cause, p.confidence
        inc.data = {
            **inc.data,
            "diagnosis": {
                "root_cause": p.root_cause,
                "confidence": p.confidence,
                "evidence": p.evidence,
                "summary": p.summary,
            },
        }
        self._note_degraded(inc, p)
        self._dispatch(
            s,
            inc,
            Capability.PROPOSE_ACTION,
            {"root_cause": p.root_cause, "device_id": inc.device_id, "confidence": p.confidence},
            pt,
            msg,
        )
        self._save(s, inc)

    def _proposal(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, ActionProposal)
        inc = self._current(s, p)
        if inc is None:
            return
        record_model_calls(s, p.model_calls, msg=msg, agent=p.agent_id, task_id=p.task_id)
        self._note_degraded(inc, p)
        action = new_row(
            Action,
            id=p.action_id,
            run_id=inc.run_id,
            incident_id=inc.id,
            device_id=p.device_id,
            command=p.command,
            parameters=p.parameters,
            hazard_class=p.hazard_class,
            idempotency_key=f"{inc.id}:{p.action_id}",
        )
        insert_rows(s, [action], if_new=True)  # a proposal seen before keeps its action
        inc.data = {**inc.data, "action_id": p.action_id}
        self._audit(
            s,
            "action.proposed",
            inc,
            actor=p.agent_id,
            action_id=p.action_id,
            device_id=p.device_id,
            command=p.command,
            parameters=p.parameters,
        )
        self._dispatch(
            s,
            inc,
            Capability.ASSESS_SAFETY,
            {"proposal": p.model_dump(mode="json", exclude={"model_calls"})},
            pt,
            msg,
        )
        self._save(s, inc)

    def _safety(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, SafetyDecision)
        inc = self._current(s, p)
        if inc is None:
            return
        record_model_calls(s, p.model_calls, msg=msg, agent=p.agent_id, task_id=p.task_id)
        action = read_row(s, Action, p.action_id)
        if action is None or p.action_id != inc.data.get("action_id"):
            # the verdict must be on the action this incident proposed, never on another one
            why = "unknown action" if action is None else "an action this incident did not propose:"
            self._escalate(s, inc, f"safety decision names {why} {p.action_id}", pt, msg)
            self._save(s, inc)
            return
        p = _no_looser_than_rules(p)
        action.hazard_class, action.rule_ids, action.reasons = p.hazard_class, p.rule_ids, p.reasons
        self._audit(
            s,
            "policy.decision",
            inc,
            actor=p.agent_id,
            action_id=action.id,
            verdict=p.verdict.value,
            rule_verdict=(p.rule_verdict or p.verdict).value,
            hazard_class=p.hazard_class,
            rule_ids=p.rule_ids,
            reasons=p.reasons,
            review=p.review.model_dump(mode="json") if p.review else None,
        )
        judged = ("hazard_class", "rule_ids", "reasons")
        if p.verdict is SafetyVerdict.REJECTED:
            action.status = "rejected"
            update_row(s, action, *judged, "status")
            self._escalate(
                s,
                inc,
                "safety officer rejected "
                f"{action.command} on {action.device_id}: " + "; ".join(p.reasons),
                pt,
                msg,
            )
        elif action.command == "notify":
            action.status = "advisory"
            update_row(s, action, *judged, "status")
            self._escalate(
                s, inc, f"a person must act: {inc.root_cause} on {inc.device_id}", pt, msg
            )
        elif p.verdict is SafetyVerdict.APPROVED:
            approval = new_row(
                Approval,
                id=f"apr-{action.id}",
                run_id=inc.run_id,
                incident_id=inc.id,
                action_id=action.id,
                status="approved",
                hazard_class=p.hazard_class,
                decisions=[
                    {
                        "approver": p.agent_id,
                        "role": "safety_officer",
                        "approved": True,
                        "reason": ", ".join(p.rule_ids),
                        "at": pt,
                    }
                ],
                requested_at=pt,
                decided_at=pt,
            )
            self._grant(s, inc, action, approval, pt, msg, new=True, action_fields=judged)
        else:
            deadline = pt + (p.approval_timeout_s or 300.0)
            approval = new_row(
                Approval,
                id=f"apr-{action.id}",
                run_id=inc.run_id,
                incident_id=inc.id,
                action_id=action.id,
                status="pending",
                hazard_class=p.hazard_class,
                approvers_required=max(1, p.approvers_required),
                approver_roles=p.approver_roles,
                requested_at=pt,
                deadline_at=deadline,
            )
            insert_rows(s, [approval])
            action.status = "pending_approval"
            update_row(s, action, *judged, "status")
            self._audit(
                s,
                "approval.requested",
                inc,
                approval_id=approval.id,
                action_id=action.id,
                hazard_class=p.hazard_class,
                approvers_required=approval.approvers_required,
                roles=p.approver_roles,
                deadline_at=deadline,
            )
            self._emit(
                s,
                ApprovalRequest(
                    approval_id=approval.id,
                    incident_id=inc.id,
                    action_id=action.id,
                    device_id=action.device_id,
                    command=action.command,
                    parameters=action.parameters,
                    hazard_class=p.hazard_class,
                    approvers_required=approval.approvers_required,
                    approver_roles=p.approver_roles,
                    deadline_ts=deadline,
                ),
                Subjects.APPROVALS,
                correlation_id=inc.id,
                cause=msg,
                pt=pt,
            )
            self._set_status(s, inc, "awaiting_approval", ", ".join(p.reasons), pt, msg)
        self._save(s, inc)

    def _grant(
        self,
        s: Session,
        inc: Incident,
        action: Action,
        approval: Approval,
        pt: float,
        cause: Message | None,
        *,
        new: bool = False,
        action_fields: tuple[str, ...] = (),
    ) -> None:
        """Approve ``action`` by ``approval`` and route its actuation. ``new``: the approval is
        not stored yet (else it is written with its ``decisions``, to which a vote added);
        ``action_fields``: other fields of ``action`` the caller changed, written with it."""
        approval.token = issue_token(
            approval.id, action.id, action.device_id, action.command, action.parameters
        )
        approval.status, approval.decided_at = "approved", pt
        action.status, action.approval_id = "approved", approval.id
        if new:
            insert_rows(s, [approval])
        else:
            update_row(s, approval, "decisions", "token", "status", "decided_at")
        update_row(s, action, *action_fields, "status", "approval_id")
        self._audit(
            s,
            "approval.granted",
            inc,
            approval_id=approval.id,
            action_id=action.id,
            by=[d["approver"] for d in approval.decisions],
        )
        self._dispatch(
            s,
            inc,
            Capability.ACTUATE,
            {"action_id": action.id, "approval_id": approval.id, "token": approval.token},
            pt,
            cause,
        )

    def _approval_message(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, ApprovalDecision)
        role = msg.source.split(":", 2)[1] if msg.source.count(":") >= 2 else ""
        self._apply_vote(s, p, role, pt, msg)

    def _apply_vote(
        self, s: Session, p: ApprovalDecision, role: str, pt: float, cause: Message | None
    ) -> None:
        approval = read_row(s, Approval, p.approval_id)
        if approval is None or approval.status != "pending":
            return
        inc = load_incident(s, approval.incident_id)
        action = read_row(s, Action, approval.action_id)
        assert action is not None
        refusal, about = None, {"role": role}
        if approval.deadline_at is not None and pt > approval.deadline_at:
            # too late: the timeout's safe default applies (``_expire`` expires it), even if
            # no tick has expired it yet (the Coordinator was down, or ticked before)
            refusal = f"after the deadline ({pt:g} s > {approval.deadline_at:g} s)"
        elif role not in approval.approver_roles:
            refusal = f"role {role!r} may not approve class {approval.hazard_class}"
        elif any(d["approver"] == p.approver for d in approval.decisions):
            refusal, about = "same person cannot approve twice", {}
        if refusal is not None:
            self._audit(
                s,
                "approval.vote_refused",
                inc,
                actor=p.approver,
                approval_id=approval.id,
                **about,
                reason=refusal,
            )
            return
        approval.decisions = [
            *approval.decisions,
            {
                "approver": p.approver,
                "role": role,
                "approved": p.approved,
                "reason": p.reason,
                "at": pt,
            },
        ]
        self._audit(
            s,
            "approval.vote",
            inc,
            actor=p.approver,
            approval_id=approval.id,
            approved=p.approved,
            role=role,
            reason=p.reason,
        )
        if not p.approved:
            approval.status, approval.decided_at = "rejected", pt
            action.status = "rejected"
            update_row(s, approval, "decisions", "status", "decided_at")
            update_row(s, action, "status")
            self._escalate(
                s,
                inc,
                f"{p.approver} ({role}) refused {action.command} on {action.device_id}: {p.reason}",
                pt,
                cause,
            )
        elif sum(1 for d in approval.decisions if d["approved"]) >= approval.approvers_required:
            self._grant(s, inc, action, approval, pt, cause)
        else:
            update_row(s, approval, "decisions")
        self._save(s, inc)

    def _executed(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, ActionResult)
        inc = self._current(s, p)
        if inc is None:
            return
        self._audit(
            s,
            "action.executed",
            inc,
            actor=p.agent_id,
            action_id=p.action_id,
            status=p.status,
            detail=p.detail,
        )
        if p.status in ("executed", "already_executed"):
            inc.data = {
                **inc.data,
                "executed_at": pt,
                "verify_deadline": pt + self.settings.verify_timeout_s,
            }
            self._set_status(s, inc, "verifying", p.detail, pt, msg)
        else:
            self._escalate(s, inc, f"action {p.action_id} {p.status}: {p.detail}", pt, msg)
        self._save(s, inc)

    def _review(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, IncidentReview)
        inc = self._current(s, p)
        if inc is None:
            return
        record_model_calls(s, p.model_calls, msg=msg, agent=p.agent_id, task_id=p.task_id)
        self._note_degraded(inc, p)
        inc.data = {
            **inc.data,
            "review": {
                "summary": p.summary,
                "lessons": p.lessons,
                "root_cause_confirmed": p.root_cause_confirmed,
            },
        }
        # the signature recall compares a new anomaly's with (stuck sensors left out)
        signature = signature_of(inc.anomaly.get("deviations", []))
        if (
            inc.outcome == "resolved"
            and p.root_cause_confirmed
            and inc.root_cause
            and inc.root_cause != "unknown"
            and signature
        ):
            lesson = new_row(
                Lesson,
                incident_id=inc.id,
                run_id=inc.run_id,
                root_cause=inc.root_cause,
                signature=signature,
                source="confirmed",
                note=p.summary[:500],
            )
            insert_rows(s, [lesson])
        self._close(s, inc, pt, msg)
        self._save(s, inc)

    def _task_failed(self, s: Session, msg: Message, pt: float) -> None:
        p = msg.payload
        assert isinstance(p, TaskFailed)
        inc = read_incident(s, p.incident_id)
        if inc is None or inc.current_task_id != p.task_id:
            return
        self._reassign(s, inc, f"{p.agent_id} failed: {p.reason}", pt, msg)
        self._save(s, inc)

    def _reassign(
        self, s: Session, inc: Incident, why: str, pt: float, cause: Message | None
    ) -> None:
        rec = read_row(s, TaskRecord, inc.current_task_id) if inc.current_task_id else None
        if rec is None:
            return
        if rec.status == "assigned":
            rec.status = "superseded"
            update_row(s, rec, "status")
        cap = Capability(rec.capability)
        if rec.attempt >= self.settings.max_attempts:
            inc.current_task_id = None
            if cap is Capability.REVIEW:
                self._close(s, inc, pt, cause, note=f"review not done: {why}")
            else:
                self._escalate(
                    s, inc, f"{cap.value} not done after {rec.attempt} attempts: {why}", pt, cause
                )
            return
        self._audit(s, "task.reassigned", inc, task_id=rec.id, reason=why)
        self._dispatch(
            s, inc, cap, inc.data.get("task_input", {}), pt, cause, attempt=rec.attempt + 1
        )

    @staticmethod
    def _note_degraded(inc: Incident, p: Any) -> None:
        notes = [f"{p.kind}: {c.degraded_reason}" for c in p.model_calls if c.degraded_reason]
        if notes:
            inc.data = {**inc.data, "degraded": [*inc.data.get("degraded", []), *notes]}

    # ---- the plant clock -----------------------------------------------------------------
    async def tick(self) -> None:
        """Apply people's votes on this run's approvals and every timeout that is due at the
        clock's plant time, then publish what that queued (and what the outbox still holds)."""
        if self.warm_up is not None:
            await self.warm_up.wait()  # a vote applied now routes the actuation
        if self.quiet():
            return
        self.apply_tick()
        await self.relay.flush()

    def quiet(self) -> bool:
        """True when a tick now would find nothing to do, by what the last full tick learnt:
        no approval was pending (so no vote to apply), the earliest deadline of the run's
        active incidents is still ahead, no event has been applied by this object since, and
        that tick is less than :data:`FULL_TICK_S` plant seconds old (events of this run
        applied by another process are seen within that time)."""
        return (
            self._quiet_until is not None
            and self._quiet_as_of == self._applied
            and self.clock.t < self._quiet_until
        )

    def apply_tick(self) -> list[OutboxRow]:
        """The transactions of :meth:`tick` without publishing; returns the outbox rows they
        committed (a host may run it in a worker thread, as :meth:`apply`). Does nothing
        while :meth:`quiet`."""
        if self.quiet():
            return []
        now, applied = self.clock.t, self._applied
        with self.store.tx() as s:
            votes = s.execute(_VOTES_TO_APPLY, {"run_id": self.run_id}).all()
            for vote in votes:
                s.execute(_VOTE_APPLIED, {"vote_seq": vote.seq})
                approval = read_row(s, Approval, vote.approval_id)
                decision = ApprovalDecision(
                    approval_id=vote.approval_id,
                    approved=vote.approved,
                    approver=vote.approver,
                    reason=vote.reason,
                )
                msg = Message.new(
                    decision,
                    source=f"person:{vote.role}:{vote.approver}",
                    subject=Subjects.EVENTS,
                    run_id=self.run_id,
                    correlation_id=approval.incident_id if approval else None,
                    time=self._now(),
                )
                record_message(s, msg, now)
                if self.on_message is not None:
                    self.on_message(msg)
                self._apply_vote(s, decision, vote.role, now, msg)
            voted = committed_outbox(s)
        with self.store.tx() as s:
            next_due = self._expire(s, now)
            expired = committed_outbox(s)
        quiet = next_due is not None and not votes
        self._quiet_until = min(next_due, now + FULL_TICK_S) if next_due and quiet else None
        self._quiet_as_of = applied
        return [*voted, *expired]

    def _expire(self, s: Session, now: float) -> float | None:
        """Apply every timeout due at ``now``. Returns the plant time before which no timeout
        of the run can fall due (``inf``: none pending), or None when this call changed an
        incident or an approval is pending (people may vote any time): then the next tick
        looks again."""
        next_due: float | None = math.inf
        for row in s.execute(_ACTIVE_IN_RUN, {"run_id": self.run_id}).all():
            inc = detached(Incident, row._mapping)
            changed = False
            rec = read_row(s, TaskRecord, inc.current_task_id) if inc.current_task_id else None
            if rec is not None and rec.deadline_at is not None and now > rec.deadline_at:
                self._reassign(
                    s,
                    inc,
                    f"no answer to {rec.id} within {self.settings.task_timeout_s:g} s",
                    now,
                    None,
                )
                changed = True
            elif inc.status == "awaiting_approval":
                approval = read_row(s, Approval, f"apr-{inc.data.get('action_id')}")
                if (
                    approval
                    and approval.status == "pending"
                    and approval.deadline_at is not None
                    and now > approval.deadline_at
                ):
                    approval.status, approval.decided_at = "expired", now
                    update_row(s, approval, "status", "decided_at")
                    action = read_row(s, Action, approval.action_id)
                    if action is not None:
                        action.status = "expired"
                        update_row(s, action, "status")
                    self._escalate(
                        s,
                        inc,
                        f"approval {approval.id} timed out after "
                        f"{approval.deadline_at - approval.requested_at:g} s: safe "
                        "default, nothing actuated",
                        now,
                        None,
                    )
                    changed = True
            elif inc.status == "verifying" and now > inc.data.get("verify_deadline", now + 1):
                self._escalate(
                    s,
                    inc,
                    "the action's effect did not show in the telemetry "
                    f"within {self.settings.verify_timeout_s:g} s",
                    now,
                    None,
                )
                changed = True
            if changed:
                self._save(s, inc)
                next_due = None
            elif next_due is not None:
                if inc.status == "awaiting_approval":
                    next_due = None
                    continue
                for due in (
                    rec.deadline_at if rec is not None else None,
                    inc.data.get("verify_deadline") if inc.status == "verifying" else None,
                ):
                    if isinstance(due, int | float):
                        next_due = min(next_due, float(due))
        return next_due
