"""The ``agent`` table: a Coordinator host records every agent it hears (the workers' and its
own) at most once per agent per heartbeat interval; ``plantcrew agents`` and the API's
``/agents`` read it. Real hosts in this process on memory:// (and NATS), on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlmodel import select
from typer.testing import CliRunner

from plantcrew.bus import Bus, connect
from plantcrew.cli import app as cli
from plantcrew.crews.config import CrewConfig
from plantcrew.crews.host import CoordinatorHost
from plantcrew.crews.worker import WorkerHost
from plantcrew.messages import AgentHeartbeat, Message, Subjects
from plantcrew.settings import DEFAULT_CONFIG_DIR
from plantcrew.store import AgentRecord, Store
from tests.conftest import bus_url_for

ROLES = ("diagnostic", "operator", "safety", "reviewer")
INTERVAL_S = 0.4  # the host's heartbeat interval: how often it may write an agent's row
WORKER_BEAT_S = 0.05  # the workers beat 8 times an interval


@dataclass
class Crew:
    """A Coordinator host and one worker of :data:`ROLES` on one bus and database, with what
    the database was asked to write to the ``agent`` table and what the bus carried."""

    bus: Bus
    store: Store
    host: CoordinatorHost
    worker: WorkerHost
    statements: list[int] = field(default_factory=list)  # rows per INSERT INTO agent
    heard: Counter[str] = field(default_factory=Counter)  # heartbeats on crew.control
    running: set[str] = field(default_factory=lambda: {"worker", "host"})

    async def stop(self, *which: str) -> None:
        """Stop the worker and then the host (or those of ``which``) if still running."""
        for part in ("worker", "host"):
            if part in self.running and (not which or part in which):
                self.running.discard(part)
                await (self.worker.stop(0.1) if part == "worker" else self.host.stop())

    @property
    def ids(self) -> set[str]:
        return {a.agent_id for a in self.worker.agents} | {self.host.agent_id}

    def rows(self) -> dict[str, AgentRecord]:
        with self.store.tx() as s:
            return {r.agent_id: r for r in s.exec(select(AgentRecord))}

    async def wait_for(self, check: Any, what: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check(self.rows()):
            assert time.monotonic() < deadline, f"{what}; agent table: {self.rows()}"
            await asyncio.sleep(0.05)


async def start_crew(bus_url: str, db_url: str) -> Crew:
    store = Store(db_url)
    bus = await connect(bus_url)
    config = CrewConfig.load(DEFAULT_CONFIG_DIR / "crew.yaml")
    config = config.model_copy(update={"heartbeat_interval_s": INTERVAL_S})
    host = CoordinatorHost(bus, store, config=config, concurrency=2)
    worker = WorkerHost(
        bus, store, roles=ROLES, config_dir=DEFAULT_CONFIG_DIR, heartbeat_interval_s=WORKER_BEAT_S
    )
    crew = Crew(bus, store, host, worker)

    @event.listens_for(store.engine, "before_cursor_execute")
    def count(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AGENT "):
            crew.statements.append(len(params) if many else 1)

    async def on_control(msg: Message) -> None:
        if isinstance(msg.payload, AgentHeartbeat):
            crew.heard[msg.payload.agent_id] += 1

    await bus.subscribe(Subjects.CONTROL, on_control)
    await host.start()
    await worker.start()
    return crew


@pytest.fixture
async def crew(db_url: str) -> AsyncIterator[Crew]:
    c = await start_crew(bus_url_for("memory"), db_url)
    yield c
    await c.stop()
    await c.bus.close()
    c.store.dispose()


@pytest.mark.parametrize("bus", ["memory", "nats"])
async def test_the_host_records_each_agent_it_hears_at_most_once_an_interval(
    bus: str, db_url: str
) -> None:
    crew = await start_crew(bus_url_for(bus), db_url)
    try:
        await crew.wait_for(lambda rows: crew.ids <= set(rows), "not every agent recorded")
        rows = crew.rows()
        for agent in crew.worker.agents:
            row = rows[agent.agent_id]
            assert (row.role, row.stopping) == (agent.role, False)
            assert sorted(row.capabilities) == sorted(c.value for c in agent.capabilities)
        me = rows[crew.host.agent_id]
        assert (me.role, me.capabilities, me.stopping) == ("coordinator", [], False)

        # throttled: a window of 5 intervals, in which each worker agent beats ~40 times
        crew.statements.clear()
        crew.heard.clear()
        window_s = 5 * INTERVAL_S
        await asyncio.sleep(window_s)
        statements, heard = list(crew.statements), Counter(crew.heard)
        most = window_s / INTERVAL_S + 1  # one write per interval, and one at the edge
        assert min(heard[a.agent_id] for a in crew.worker.agents) >= 20, heard
        assert 1 <= len(statements) <= most, statements  # one transaction per interval
        assert sum(statements) <= most * len(crew.ids), statements  # <= 1 row/agent/interval
        now = datetime.now(UTC)
        for row in crew.rows().values():
            assert now - row.last_seen < timedelta(seconds=3 * INTERVAL_S), row

        # a worker that stops says so in the table, and so does the host
        await crew.stop("worker")
        agents = {a.agent_id for a in crew.worker.agents}
        await crew.wait_for(
            lambda rows: all(rows[a].stopping for a in agents), "the stopped worker not recorded"
        )
        await crew.stop("host")
        assert crew.rows()[crew.host.agent_id].stopping
    finally:
        await crew.stop()
        await crew.bus.close()
        crew.store.dispose()


async def test_plantcrew_agents_lists_the_recorded_agents_live_then_stopping(
    crew: Crew, db_url: str
) -> None:
    await crew.wait_for(lambda rows: crew.ids <= set(rows), "not every agent recorded")
    runner = CliRunner()
    res = runner.invoke(cli, ["agents", "--db", db_url, "--json"])
    assert res.exit_code == 0, res.stdout + res.stderr
    listed = {a["agent_id"]: a for a in json.loads(res.stdout)}
    assert set(listed) == crew.ids
    assert all(a["live"] and a["state"] == "live" for a in listed.values()), listed
    assert all(0 <= a["age_s"] < 3 * INTERVAL_S for a in listed.values()), listed
    operator = next(a for a in crew.worker.agents if a.role == "operator")
    assert sorted(listed[operator.agent_id]["capabilities"]) == sorted(
        c.value for c in operator.capabilities
    )
    res = runner.invoke(cli, ["agents", "--db", db_url])  # the table people read
    assert res.exit_code == 0, res.stdout + res.stderr
    assert operator.agent_id in res.stdout and "live" in res.stdout

    await crew.stop()
    listed = {
        a["agent_id"]: a
        for a in json.loads(runner.invoke(cli, ["agents", "--db", db_url, "--json"]).stdout)
    }
    assert {a["state"] for a in listed.values()} == {"stopping"}, listed
    assert not any(a["live"] for a in listed.values())


async def test_the_api_shows_agents_a_coordinator_on_another_bus_recorded(crew: Crew) -> None:
    from plantcrew.api import ApiSettings, create_app
    from tests.api.conftest import make_tokens

    # the service is not on the crew's bus (another memory:// process): it hears none of
    # their heartbeats, and the Coordinator's records are all it has
    tokens = make_tokens(crew.store)
    app = create_app(
        ApiSettings(burst=1000, rate_per_s=1000),
        store=crew.store,
        bus_url=f"memory://api{uuid.uuid4().hex[:10]}",
        load_router=False,
    )
    headers = {"Authorization": f"Bearer {tokens['viewer']}"}
    await crew.wait_for(lambda rows: crew.ids <= set(rows), "not every agent recorded")
    with TestClient(app) as client:
        r = client.get("/api/v1/agents", headers=headers)
        assert r.status_code == 200, r.text
        shown = {a["agent_id"]: a for a in r.json()}
        assert set(shown) == crew.ids
        for a in shown.values():
            assert (a["source"], a["live"], a["in_flight"]) == ("database", True, None), a
        await crew.stop()
        shown = {a["agent_id"]: a for a in client.get("/api/v1/agents", headers=headers).json()}
        assert all(a["stopping"] and not a["live"] for a in shown.values()), shown
