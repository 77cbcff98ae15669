"""The safety-critical path through a real Coordinator and a real database: a proposal judged
``needs_human`` waits for people, and only their timely votes (or the rules) let the action run,
once. Agents' answers are made here as the agents would send them; votes go through
``Store.cast_vote`` as the API and CLI submit them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from sqlalchemy import event as sa_event
from sqlmodel import Session, select

from plantcrew.agents import Operator, Policies
from plantcrew.bus import Bus, connect
from plantcrew.crews import Coordinator, CoordinatorSettings
from plantcrew.errors import ApprovalError, StoreError
from plantcrew.llm import ModelRouter
from plantcrew.messages import (
    ActionProposal,
    ActionResult,
    AgentHeartbeat,
    AnomalyCleared,
    AnomalyDetected,
    Capability,
    Deviation,
    Diagnosis,
    IncidentReview,
    Message,
    SafetyDecision,
    SafetyVerdict,
    Subjects,
    Task,
)
from plantcrew.plant.actuators import ActuatorCommand, ActuatorReceipt
from plantcrew.plant.clock import SimClock
from plantcrew.settings import DEFAULT_CONFIG_DIR
from plantcrew.store import Action, AuditEntry, Store, TaskRecord
from plantcrew.store.execution import begin_execution

SETTINGS = CoordinatorSettings(task_timeout_s=60, max_attempts=2, agent_ttl_s=1e9)
RUN = "r1"
INC = f"inc-{RUN}-1"
ACTION = "act-stop-1"
APPROVAL = f"apr-{ACTION}"
TIMEOUT_S = 300.0


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Bus, Store, SimClock]]:
    """The in-process bus, a SimClock and a store on SQLite or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        url = request.getfixturevalue("pg_schema_url")
    bus, store = await connect(f"memory://approval-{tmp_path.name}"), Store(url)
    yield bus, store, SimClock()
    store.dispose()
    await bus.close()


def coordinator(bus: Bus, store: Store, clock: SimClock) -> Coordinator:
    coord = Coordinator(bus, store, clock, run_id=RUN, run_started=clock.start, settings=SETTINGS)
    for role, caps in {
        "diagnostic": [Capability.DIAGNOSE],
        "operator": [Capability.PROPOSE_ACTION, Capability.ACTUATE],
        "safety": [Capability.ASSESS_SAFETY],
        "reviewer": [Capability.REVIEW],
    }.items():
        coord.registry.heard(
            AgentHeartbeat(agent_id=f"{role}-1", role=role, capabilities=caps), clock.t
        )
    return coord


def event(clock: SimClock, payload: Any, source: str, correlation_id: str = INC) -> Message:
    return Message.new(
        payload,
        source=source,
        subject=Subjects.EVENTS,
        time=clock.now(),
        run_id=RUN,
        correlation_id=correlation_id,
    )


def anomaly(clock: SimClock) -> Message:
    dev = Deviation(sensor="bearing_temp", value=95, baseline=60, z=20, direction="up")
    return event(
        clock,
        AnomalyDetected(device_id="pump1", score=0.99, ts=clock.t, deviations=[dev]),
        "monitor-1",
        correlation_id=RUN,
    )


def answer(clock: SimClock, cls: Any, step: str, agent: str, **fields: Any) -> Message:
    """``agent``'s answer to the first attempt of the incident's ``step`` task."""
    payload = cls(task_id=f"{INC}-{step}-1", incident_id=INC, agent_id=agent, **fields)
    return event(clock, payload, agent)


def steps(clock: SimClock) -> list[Message]:
    """Anomaly, diagnosis, a ``stop`` proposal and a class-2 ``needs_human`` decision."""
    return [
        anomaly(clock),
        answer(
            clock,
            Diagnosis,
            "diagnose",
            "diagnostic-1",
            root_cause="bearing_overheating",
            confidence=0.9,
        ),
        answer(
            clock,
            ActionProposal,
            "propose_action",
            "operator-1",
            action_id=ACTION,
            device_id="pump1",
            command="stop",
            hazard_class=2,
        ),
        answer(
            clock,
            SafetyDecision,
            "assess_safety",
            "safety-1",
            action_id=ACTION,
            verdict=SafetyVerdict.NEEDS_HUMAN,
            rule_verdict=SafetyVerdict.NEEDS_HUMAN,
            hazard_class=2,
            rule_ids=["needs-approval:class-2"],
            approvers_required=1,
            approver_roles=["shift_supervisor"],
            approval_timeout_s=TIMEOUT_S,
        ),
    ]


def to_awaiting_approval(coord: Coordinator, clock: SimClock) -> None:
    for msg in steps(clock):
        assert coord.apply_event(msg)


async def test_a_vote_applied_after_the_approval_deadline_does_not_approve(env: Any) -> None:
    """The timeout's safe default holds even when the vote is waiting when the deadline passes
    (the Coordinator was down, or its last tick came before the deadline)."""
    bus, store, clock = env
    coord = coordinator(bus, store, clock)
    to_awaiting_approval(coord, clock)
    assert store.get_incident(INC).status == "awaiting_approval"
    clock.advance(TIMEOUT_S + 30)  # no tick ran meanwhile: the approval is still pending
    store.cast_vote(APPROVAL, approver="alice", role="shift_supervisor", approved=True)
    coord.apply_tick()
    approval = store.get_approval(APPROVAL)
    assert approval.status == "expired" and approval.token is None
    [action] = store.actions(RUN)
    assert action.status == "expired"
    inc = store.get_incident(INC)
    assert inc.outcome == "escalated" and "timed out" in (inc.escalation_reason or "")
    assert not any(t.endswith("-actuate-1") for t in _task_ids(store))
    with store.tx() as s:
        refused = [e.data for e in s.exec(select(AuditEntry)) if e.kind == "approval.vote_refused"]
    assert [r["approval_id"] for r in refused] == [APPROVAL]


async def test_a_vote_before_the_deadline_approves_once(env: Any) -> None:
    bus, store, clock = env
    coord = coordinator(bus, store, clock)
    to_awaiting_approval(coord, clock)
    clock.advance(TIMEOUT_S - 30)
    store.cast_vote(APPROVAL, approver="alice", role="shift_supervisor", approved=True)
    coord.apply_tick()
    approval = store.get_approval(APPROVAL)
    assert approval.status == "approved" and approval.token
    assert store.get_incident(INC).status == "actuating"
    action, send = begin_execution(
        store, action_id=ACTION, approval_id=APPROVAL, token=approval.token, plant_time=clock.t
    )
    assert send and action.command == "stop"
    _, again = begin_execution(
        store, action_id=ACTION, approval_id=APPROVAL, token=approval.token, plant_time=clock.t
    )
    assert not again  # a redelivered actuate task never sends it twice


def _task_ids(store: Store) -> list[str]:
    with store.tx() as s:
        return [t.id for t in s.exec(select(TaskRecord))]


async def test_a_repeated_anomaly_does_not_undo_a_concurrent_step_of_its_incident(
    pg_schema_url: str, tmp_path: Path
) -> None:
    """PostgreSQL runs a Coordinator's transactions concurrently (several event consumers, or
    a second Coordinator process): a repeated ``anomaly.detected`` on the device (keyed by run,
    not by incident) joins the incident while its proposal is being applied. Losing the
    proposal's changes to the incident would leave the approval without its timeout."""
    bus = await connect(f"memory://approval-{tmp_path.name}")
    store = Store(pg_schema_url)
    # the other transaction's connection gives up waiting for a row lock (as a redelivery)
    other = Store(pg_schema_url + quote(" -clock_timeout=3000"), create=False)
    clock = SimClock()
    try:
        coord, beside = coordinator(bus, store, clock), coordinator(bus, other, clock)
        first, diagnosis, proposal, decision = steps(clock)
        assert coord.apply_event(first) and coord.apply_event(diagnosis)
        with store.tx() as s:
            assert coord.apply_in(s, anomaly(clock))  # the device alarms again: it joins
            try:
                applied = beside.apply_event(proposal)  # meanwhile, on another connection
            except StoreError:  # it waited for the first transaction: redelivered below
                applied = False
        if not applied:
            assert coord.apply_event(proposal)
        assert coord.apply_event(decision)
        inc = store.get_incident(INC)
        assert inc.status == "awaiting_approval" and inc.data["anomalies"] == 2
        assert inc.data["action_id"] == ACTION
        clock.advance(TIMEOUT_S + 1)
        coord.apply_tick()  # nobody answered: the safe default applies
        assert store.get_approval(APPROVAL).status == "expired"
        assert store.get_incident(INC).outcome == "escalated"
    finally:
        other.dispose()
        store.dispose()
        await bus.close()


async def test_an_actuation_the_coordinator_gave_up_on_cannot_run_later(env: Any) -> None:
    """The Operator never answers the actuate task: after the last attempt the incident goes to
    a person. A worker that takes one of those tasks later (back from a stall, or the broker
    redelivering) must not then stop the pump behind the person's back."""
    bus, store, clock = env
    coord = coordinator(bus, store, clock)
    to_awaiting_approval(coord, clock)
    store.cast_vote(APPROVAL, approver="alice", role="shift_supervisor", approved=True)
    coord.apply_tick()
    token = store.get_approval(APPROVAL).token
    assert token and store.get_incident(INC).status == "actuating"
    for _ in range(SETTINGS.max_attempts):
        clock.advance(SETTINGS.task_timeout_s + 1)
        coord.apply_tick()
    inc = store.get_incident(INC)
    assert inc.outcome == "escalated"
    assert inc.escalation_reason.startswith("actuate not done after 2 attempts")
    with pytest.raises(ApprovalError):
        begin_execution(
            store, action_id=ACTION, approval_id=APPROVAL, token=token, plant_time=clock.t
        )
    [action] = store.actions(RUN)
    assert action.status == "expired" and action.executed_at is None
    assert store.get_approval(APPROVAL).status == "expired"


async def test_a_safety_decision_on_another_action_is_not_applied(env: Any) -> None:
    # the verdict must be on the action this incident proposed: an answer naming another
    # (existing) action escalates to a person and leaves that action as it was
    bus, store, clock = env
    coord = coordinator(bus, store, clock)
    *before, decision = steps(clock)
    for msg in before:
        assert coord.apply_event(msg)
    other = "act-other-1"
    with store.tx() as s:
        [mine] = s.exec(select(Action).where(Action.id == ACTION)).all()
        s.add(Action(**{**mine.model_dump(), "id": other, "idempotency_key": other}))
    p = decision.payload
    assert isinstance(p, SafetyDecision)
    wrong = p.model_copy(update={"action_id": other, "verdict": SafetyVerdict.APPROVED})
    assert coord.apply_event(event(clock, wrong, "safety-1"))
    inc = store.get_incident(INC)
    assert inc.outcome == "escalated"
    assert "did not propose" in (inc.escalation_reason or "")
    statuses = {a.id: a.status for a in store.actions(RUN)}
    assert statuses[other] == statuses[ACTION] == "proposed"
    with pytest.raises(StoreError):
        store.get_approval(APPROVAL)


class RecordingActuator:
    """The plant end of an actuation: records each command it is sent (no plant here)."""

    def __init__(self) -> None:
        self.commands: list[ActuatorCommand] = []

    async def execute(self, cmd: ActuatorCommand) -> ActuatorReceipt:
        self.commands.append(cmd)
        return ActuatorReceipt(
            action_id=cmd.action_id, idempotency_key=cmd.idempotency_key, status="executed", ts=0
        )


async def test_the_operator_waits_for_its_claim_without_stopping_the_worker(
    pg_schema_url: str, tmp_path: Path
) -> None:
    """Claiming an action may wait on its row lock (another claim, a slow database): the
    worker's event loop (heartbeats, probes, its other tasks) goes on meanwhile."""
    bus = await connect(f"memory://actuate-{tmp_path.name}")
    store = Store(pg_schema_url)
    clock = SimClock()
    try:
        coord = coordinator(bus, store, clock)
        to_awaiting_approval(coord, clock)
        store.cast_vote(APPROVAL, approver="alice", role="shift_supervisor", approved=True)
        coord.apply_tick()
        token = store.get_approval(APPROVAL).token
        actuator = RecordingActuator()
        policies = Policies.load(DEFAULT_CONFIG_DIR / "policies.yaml")
        operator = Operator(
            "operator-1", bus, clock, router=ModelRouter.from_file(), store=store,
            actuator=actuator, assets={}, policies=policies,
        )  # fmt: skip
        task = Task(
            task_id=f"{INC}-actuate-1", incident_id=INC, capability=Capability.ACTUATE,
            input={"action_id": ACTION, "approval_id": APPROVAL, "token": token},
        )  # fmt: skip
        holder = psycopg.connect(pg_schema_url)
        holder.execute("SELECT 1 FROM action WHERE id = %s FOR UPDATE", (ACTION,))
        release = threading.Timer(1.5, holder.commit)  # as another claim's transaction ends
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        beating = asyncio.create_task(heartbeat())
        release.start()
        try:
            done = await operator._actuate(task)
        finally:
            release.join()
            holder.close()
            beating.cancel()
        assert done.status == "executed" and [c.action_id for c in actuator.commands] == [ACTION]
        assert ticks >= 10  # about 30 in the 1.5 s the claim waited; none if the loop stood
    finally:
        store.dispose()
        await bus.close()


@contextmanager
def orm_flushes() -> Iterator[list[list[str]]]:
    """The table objects each ORM flush wrote while inside (class names, per flush)."""
    seen: list[list[str]] = []

    def before_flush(session: Session, _ctx: Any, _instances: Any) -> None:
        objs = [*session.new, *session.dirty, *session.deleted]
        if objs:
            seen.append(sorted({type(o).__name__ for o in objs}))

    sa_event.listen(Session, "before_flush", before_flush)
    try:
        yield seen
    finally:
        sa_event.remove(Session, "before_flush", before_flush)


async def test_an_incident_through_approval_and_review_writes_no_orm_object(env: Any) -> None:
    # the Coordinator writes with Core statements: the ORM's unit of work (its flush, and the
    # autoflush before each statement) cost more CPU than the statements themselves
    bus, store, clock = env
    coord = coordinator(bus, store, clock)

    def apply(step: Callable[[], Any]) -> None:
        with orm_flushes() as flushed:
            step()
        assert flushed == []

    apply(lambda: to_awaiting_approval(coord, clock))  # anomaly to a pending approval
    store.cast_vote(APPROVAL, approver="alice", role="shift_supervisor", approved=True)
    apply(coord.apply_tick)  # the vote: granted, actuation routed
    assert store.get_approval(APPROVAL).status == "approved"
    assert store.get_incident(INC).status == "actuating"
    done = answer(clock, ActionResult, "actuate", "operator-1", action_id=ACTION, status="executed")
    apply(lambda: coord.apply_event(done))
    cleared = event(clock, AnomalyCleared(device_id="pump1", ts=clock.t), "monitor-1")
    apply(lambda: coord.apply_event(cleared))
    review = answer(clock, IncidentReview, "review", "reviewer-1", summary="ok")
    apply(lambda: coord.apply_event(review))
    incident = store.get_incident(INC)
    assert (incident.status, incident.outcome) == ("resolved", "resolved")
