"""The Coordinator on the real in-process bus and SQLite: routing by capability, reassigning a
step whose agent stops answering, handing an incident to a person, idempotent handling."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from plantcrew.agents import Diagnostic, Reviewer
from plantcrew.bus import Bus, connect
from plantcrew.crews import Coordinator, CoordinatorSettings, Crew
from plantcrew.detect import load_signatures
from plantcrew.llm import ModelRouter
from plantcrew.messages import (
    AgentHeartbeat,
    AnomalyDetected,
    Capability,
    Deviation,
    Message,
    Subjects,
    Task,
)
from plantcrew.plant.clock import SimClock
from plantcrew.store import AuditEntry, Store, TaskRecord

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = CoordinatorSettings(task_timeout_s=60, max_attempts=3, agent_ttl_s=30)


class HungDiagnostic(Diagnostic):
    """A Diagnostic that takes its task and never answers (a wedged worker)."""

    async def handle(self, task: Task, msg: Message) -> Any:
        await asyncio.sleep(3600)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Bus, Store, SimClock]]:
    bus = await connect(f"memory://coord-{tmp_path.name}")
    yield bus, Store(f"sqlite:///{tmp_path / 'c.db'}"), SimClock()
    await bus.close()


def anomaly(clock: SimClock, extra: int = 0) -> Message:
    """An anomaly on pump1 (with ``extra`` more deviations: a bigger message)."""
    devs = [
        Deviation(sensor="vibration_1", value=0.9, baseline=0.2, z=30, direction="up"),
        Deviation(sensor="flow_rate", value=100, baseline=125, z=-12, direction="down"),
        Deviation(sensor="pressure", value=0.8, baseline=1.0, z=-8, direction="down"),
    ] + [
        Deviation(sensor=f"sensor_{i}", value=1.0, baseline=0.5, z=6, direction="up")
        for i in range(extra)
    ]
    return Message.new(
        AnomalyDetected(device_id="pump1", score=0.99, ts=clock.t, deviations=devs),
        source="monitor-1",
        subject=Subjects.EVENTS,
        time=clock.now(),
        run_id="r1",
        correlation_id="r1",
    )


def coordinator(bus: Bus, store: Store, clock: SimClock) -> Coordinator:
    return Coordinator(bus, store, clock, run_id="r1", run_started=clock.start, settings=SETTINGS)


def diagnostic(cls: type[Diagnostic], n: int, bus: Bus, clock: SimClock) -> Diagnostic:
    return cls(
        f"diagnostic-{n}",
        bus,
        clock,
        router=ModelRouter.from_file(
            ROOT / "config" / "models.yaml", playbooks_path=ROOT / "config" / "playbooks.yaml"
        ),
        signatures=load_signatures(ROOT / "config" / "signatures.yaml"),
    )


async def advance(crew: Crew, bus: Bus, clock: SimClock, seconds: int) -> None:
    for _ in range(seconds):
        clock.advance(1.0)
        await crew.tick()
        await bus.quiesce(timeout=0.05)  # a wedged handler never settles


async def test_no_live_agent_hands_the_incident_to_a_person(env: Any) -> None:
    bus, store, clock = env
    crew = Crew(coordinator(bus, store, clock), [], clock)
    await crew.start()
    await bus.publish(anomaly(clock))
    await bus.quiesce()
    [inc] = store.incidents("r1")
    assert inc.status == "escalated" and inc.outcome == "escalated"
    assert inc.escalation_reason == "no live agent can diagnose"
    await crew.stop()


async def test_step_of_a_wedged_agent_is_reassigned_to_another(env: Any) -> None:
    bus, store, clock = env
    hung, healthy = diagnostic(HungDiagnostic, 1, bus, clock), diagnostic(Diagnostic, 2, bus, clock)
    crew = Crew(coordinator(bus, store, clock), [hung, healthy], clock)
    await crew.start()
    await bus.quiesce()
    await bus.publish(anomaly(clock))
    await bus.quiesce(timeout=2)
    [inc] = store.incidents("r1")
    assert inc.status == "diagnosing"
    await advance(crew, bus, clock, 61)  # past the task deadline
    loop = asyncio.get_running_loop()
    end = loop.time() + 60  # the first model call also imports litellm
    while store.get_incident(inc.id).status == "diagnosing" and loop.time() < end:
        await bus.quiesce(timeout=0.1)
    with store.tx() as s:
        tasks = s.exec(select(TaskRecord).order_by(TaskRecord.assigned_at)).all()
        kinds = [e.kind for e in s.exec(select(AuditEntry))]
    assert [(t.capability, t.attempt, t.status) for t in tasks[:2]] == [
        ("diagnose", 1, "superseded"),
        ("diagnose", 2, "done"),
    ]
    assert "task.reassigned" in kinds
    inc = store.get_incident(inc.id)
    assert inc.root_cause not in (None, "unknown")
    # nobody can propose an action in this crew: a person gets it
    assert inc.escalation_reason == "no live agent can propose_action"
    await crew.stop()


async def test_silent_agent_counts_as_gone_after_its_ttl(env: Any) -> None:
    bus, store, clock = env
    diag = diagnostic(Diagnostic, 1, bus, clock)
    crew = Crew(coordinator(bus, store, clock), [], clock)  # the crew does not beat for it
    await crew.start()
    await diag.start()  # announces itself once
    await bus.quiesce()
    clock.advance(SETTINGS.agent_ttl_s + 1)
    await bus.publish(anomaly(clock))
    await bus.quiesce()
    [inc] = store.incidents("r1")
    assert inc.escalation_reason == "no live agent can diagnose"
    await diag.stop()
    await crew.stop()


async def test_an_event_handled_twice_changes_state_once(env: Any) -> None:
    bus, store, clock = env
    coord = coordinator(bus, store, clock)
    msg = anomaly(clock)
    await coord._on_event(msg)
    await coord._on_event(msg)  # a redelivery after a lost ack
    assert len(store.incidents("r1")) == 1
    assert [m.id for m in store.messages("r1", types=["anomaly.detected"])] == [str(msg.id)]


async def test_second_anomaly_on_an_open_incident_joins_it(env: Any) -> None:
    bus, store, clock = env
    coord = coordinator(bus, store, clock)
    coord.registry.heard(
        AgentHeartbeat(
            agent_id="diagnostic-1", role="diagnostic", capabilities=[Capability.DIAGNOSE]
        ),
        clock.t,
    )
    await coord._on_event(anomaly(clock))
    await coord._on_event(anomaly(clock))
    [inc] = store.incidents("r1")
    assert inc.data["anomalies"] == 2


async def test_a_task_too_large_for_the_bus_escalates_at_once_naming_its_size(
    tmp_path: Path,
) -> None:
    # before: the Coordinator queued the diagnose task, the relay dead-lettered it (over the
    # limit), and the incident stayed "diagnosing": 60 s per attempt, the same task 3 times,
    # then escalated with "no answer to ... within 60 s"
    clock = SimClock()
    event = anomaly(clock, extra=40)
    limit = len(event.to_bytes()) + 16  # the anomaly fits; the task that carries it does not
    bus = await connect(f"memory://big-{tmp_path.name}?max_message_bytes={limit}")
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    dead: list[Message] = []

    async def on_dead(msg: Message) -> None:
        dead.append(msg)

    await bus.consume(Subjects.DLQ, on_dead, group="watch")
    router = ModelRouter.from_file(
        ROOT / "config" / "models.yaml", playbooks_path=ROOT / "config" / "playbooks.yaml"
    )
    agents = [
        diagnostic(Diagnostic, 1, bus, clock),
        Reviewer("reviewer-1", bus, clock, router=router),
    ]
    crew = Crew(coordinator(bus, store, clock), agents, clock)
    await crew.start()
    await bus.quiesce()
    await bus.publish(event)
    await bus.quiesce()
    [inc] = store.incidents("r1")
    assert inc.status == "escalated" and inc.outcome == "escalated"
    over = (
        rf"message of (\d+) bytes for '{{}}' is over the bus's max_message_bytes of {limit} bytes"
    )
    m = re.fullmatch(
        rf"diagnose task {inc.id}-diagnose-1 not sent: " + over.format("crew.tasks.diagnose"),
        inc.escalation_reason or "",
    )
    assert m is not None, inc.escalation_reason
    assert int(m[1]) > limit
    # the review's facts carry the same deviations: it cannot be sent either
    assert re.fullmatch(
        rf"review not done: review task {inc.id}-review-1 not sent: "
        + over.format("crew.tasks.review"),
        inc.data["note"],
    ), inc.data["note"]
    with store.tx() as s:
        assert s.exec(select(TaskRecord)).all() == []  # nothing queued that nobody answers
    assert dead == [] and store.pending_outbox() == []
    await crew.stop()
    store.dispose()
    await bus.close()
