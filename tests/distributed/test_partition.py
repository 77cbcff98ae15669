"""A network partition cuts an Operator worker off NATS while it holds an actuate task: the
plant has carried the command out, the worker never hears back. The task comes back to the
group after its ack wait and the other Operator finishes it; then the partition heals and the
cut-off worker's late traffic (its nak, its heartbeats, its answer to the task) arrives.

The action is still executed once at the plant and recorded once (the actions table says
``executed``, as the plant did), the run passes, the audit chain verifies, the whole backlog
is acknowledged, and the worker that was cut off heartbeats again.

The crew: ``plantcrew up`` (Coordinator, Monitor, Diagnostic, Safety, Reviewer) and two
``plantcrew worker --role operator``, on the machine's NATS (a fresh namespace) and PostgreSQL
(a fresh schema). Each Operator reaches NATS through a TCP forwarder of its own on loopback
(:class:`tests.forwarder.Forwarder`); the moment is the one the SIGKILL test of
``test_crew.py`` picks: the plant's gateway has just carried the command out when the test
partitions the sender's forwarder (nothing forwarded either way, every socket kept open), so
the plant's answer is held with everything else. The other Operator's forwarder forwards all
along. The partition holds until the other Operator has recorded the action and for
:data:`HOLD_S` in all: past the ack wait (shortened to :data:`SHORT_ACK_WAIT_S` here, so the
takeover comes well before the cut-off worker's own actuator timeout of 10 s) and past that
timeout, so the cut-off worker's late handler has given up before the network comes back.
Before the fix, that late handler recorded "failed: outcome unknown" over the other
Operator's "executed" in the actions table (and with the ack wait of the shared test config,
before the run ended, failing its ``actions_executed`` expectation).

A partition this short (12 s) is healed before the NATS client gives its connection up (it
pings every 5 s and calls it stale after 3 unanswered pings): the worker's TCP connection
resumes, its held traffic arrives, and it heartbeats again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from sqlmodel import col, select

from plantcrew.bus import connect
from plantcrew.messages import Message
from plantcrew.plant.bus_actuator import PlantGateway
from plantcrew.scenarios.runner import run_scenario
from plantcrew.store import AuditEntry, Store
from tests.conftest import NATS_URL, bus_url_for
from tests.distributed.conftest import (
    OPERATOR,
    crew_of,
    new_schema,
    until,
    watch_commands_and_heartbeats,
)
from tests.distributed.test_crew import SHORT, gateway_counts, settled
from tests.forwarder import Forwarder, through

UP = ("up", "--role", "monitor", "--role", "diagnostic", "--role", "safety", "--role", "reviewer")
HOLD_S = 12.0
"""How long the partition holds at least: the server's ack wait (6 s) and the worker's
actuator timeout (10 s, counted from a moment before the cut) have both passed."""
WAIT_S = 60.0  # the longest the test waits for any one thing


async def test_a_partitioned_operator_executes_nothing_twice_and_comes_back(
    short_ack_config: Path,
    pg_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nats = urlparse(NATS_URL)
    forwarders = [Forwarder((nats.hostname or "127.0.0.1", nats.port or 4222)) for _ in "ab"]
    for fwd in forwarders:
        fwd.start()
    bus_url = bus_url_for("nats")
    loop = asyncio.get_running_loop()
    cut: dict[str, Any] = {}

    original = PlantGateway._on_command

    async def answer_into_a_partition(self: PlantGateway, msg: Message) -> Any:
        reply = await original(self, msg)  # the plant carries the command out
        if not cut:
            pid = int(msg.source.rsplit("-", 1)[1])  # operator-<host>-<pid>
            fwd = forwarders[operators.index(pid)]
            fwd.partition()  # the answer, and all else, is held from now on
            cut.update(source=msg.source, forwarder=fwd, at=loop.time())
        return reply

    monkeypatch.setattr(PlantGateway, "_on_command", answer_into_a_partition)
    handled = gateway_counts(monkeypatch)

    bus = await connect(bus_url)
    commands, heartbeats = await watch_commands_and_heartbeats(bus)  # late ones too
    store: Store | None = None
    try:
        db_url = new_schema(pg_database)
        with crew_of(bus_url, db_url, short_ack_config, tmp_path / "logs", UP) as crew:
            procs = [crew.spawn(*OPERATOR, bus_url=through(bus_url, f.port)) for f in forwarders]
            crew.wait_ready()
            operators = [p.pid for p in procs]
            store = Store(crew.db_url)

            def taken_over() -> bool:
                assert store is not None
                done = store.actions()
                return bool(cut) and any(a.status != "executing" for a in done)

            async def heal_once_taken_over() -> float:
                await until("another Operator records the action", taken_over)
                await asyncio.sleep(max(0.0, cut["at"] + HOLD_S - loop.time()))
                cut["forwarder"].heal()
                return loop.time()

            scenario = run_scenario(
                SHORT, bus_url=bus_url, db_url=crew.db_url, config_dir=crew.config_dir,
                crew="remote",
            )  # fmt: skip
            run = asyncio.create_task(scenario)
            while not cut:  # the run fails before the cut: say why
                await asyncio.wait({run}, timeout=0.2)
                if run.done():
                    run.result()
                    raise AssertionError("the run ended without any command reaching the plant")
            healed_at = await asyncio.wait_for(heal_once_taken_over(), WAIT_S + HOLD_S)
            result = await asyncio.wait_for(run, WAIT_S * 3)

            # the cut-off worker is back: it heartbeats again, idle (its late handler ended)
            agent = cut["source"]
            back = await until(
                f"{agent} heartbeats after the partition healed",
                lambda: [hb for t, hb in heartbeats if t > healed_at and hb.agent_id == agent],
            )
            assert back[-1].in_flight == 0 and not back[-1].stopping
            await settled(bus_url)  # every durable message acknowledged, its late ones too
            await asyncio.sleep(1.0)  # anything still in flight on a plain subject lands

            # executed once at the plant: the second command was the other Operator's repeat
            # of the same idempotency key, answered from the first receipt
            assert handled and handled[0].get("executed") == 1, handled
            keys = {m.payload.input["command"]["idempotency_key"] for m in commands}
            assert len(keys) == 1, keys
            senders = [m.source for m in commands]
            assert senders.count(agent) == 1, senders

            (action,) = store.actions(run_id=result.run_id)
            failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.passed]
            assert result.passed, (failed, action)
            assert (action.command, action.status) == ("stop", "executed"), action
            assert action.receipt.get("idempotency_key") == action.idempotency_key
            # one answer to the task, the other Operator's: the cut-off one answered nothing
            answered = store.messages(result.run_id, types=["action.executed"])
            assert [m.source != agent for m in answered] == [True], answered
            assert answered[0].source.startswith("operator-"), answered
            with store.tx() as s:
                executed = s.exec(
                    select(AuditEntry.actor).where(
                        col(AuditEntry.run_id) == result.run_id,
                        col(AuditEntry.kind) == "action.executed",
                    )
                ).all()
            assert list(executed) == [answered[0].source], executed
            (incident,) = store.incidents(result.run_id)
            assert (incident.status, incident.outcome) == ("resolved", "resolved"), incident
            assert store.verify_audit() == []
            assert store.dead_letters() == []
    finally:
        for fwd in forwarders:
            fwd.stop()
        await bus.close()
        if store is not None:
            store.dispose()
