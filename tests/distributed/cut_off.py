"""A crew with its only Operator cut off its broker: what the partition tests of one worker
(``test_stale_partition.py`` on NATS, ``test_half_open_redis.py`` on Redis) share.

``plantcrew up`` (Coordinator, Monitor, Diagnostic, Safety, Reviewer) reaches the broker
directly; the Operator, ``plantcrew worker --role operator``, through a
:class:`tests.forwarder.Forwarder` the test partitions while the short scenario runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from plantcrew.bus import connect
from plantcrew.messages import AgentHeartbeat, Message
from plantcrew.scenarios.runner import RunResult, run_scenario
from plantcrew.store import Store
from tests.distributed.conftest import (
    OPERATOR,
    Crew,
    CrewProcess,
    crew_of,
    new_schema,
    watch_commands_and_heartbeats,
)
from tests.distributed.test_crew import SHORT, gateway_counts
from tests.distributed.test_partition import UP
from tests.forwarder import Forwarder, through

CASES = [("task", "hold"), ("answer", "refuse")]
"""``(cut, mode)`` of each case: the partition starts when the broker hands the Operator its
first task, new connections held; or when the Operator sends its answer, new connections
refused (see each test's module doc)."""
ANSWER_CUT = (b'"type":"action.proposed"', True)
"""The Operator sends its answer to the task (the JSON of the message it publishes): the bytes
the partition holds first, sent by the client."""


def cuts(task: bytes) -> dict[str, tuple[bytes, bool]]:
    """Where each case's partition starts (the bytes it holds first, and whether the client
    sends them): ``task``, the broker's bytes ``task`` (the task delivered, as the broker's
    protocol says it); ``answer``, :data:`ANSWER_CUT`."""
    return {"task": (task, False), "answer": ANSWER_CUT}


@dataclass
class CutOff:
    """The crew, its Operator (``worker``, agent id ``agent``) behind ``fwd``, and what the test
    process sees: plant ``commands``, ``heartbeats`` (with their arrival times), the plant
    gateway's counts (``handled``, once the run stopped it)."""

    bus_url: str
    fwd: Forwarder
    crew: Crew
    worker: CrewProcess
    agent: str
    store: Store
    commands: list[Message]
    heartbeats: list[tuple[float, AgentHeartbeat]]
    handled: list[dict[str, int]]
    phase: Callable[[str], None]
    at_cut: tuple[int, int, bool] = (0, 0, False)  # the forwarder's counts, and refuse

    def log_says(self, line: str) -> bool:
        """Whether the Operator's log has ``line``."""
        return line in self.worker.log.read_text(errors="replace")

    def heartbeats_since(self, t: float) -> list[AgentHeartbeat]:
        """The Operator's heartbeats that arrived after loop time ``t``."""
        return [hb for at, hb in self.heartbeats if at > t and hb.agent_id == self.agent]

    async def run_until_cut(
        self, cut: tuple[bytes, bool], *, refuse: bool, wait_s: float
    ) -> tuple[asyncio.Task[RunResult], float]:
        """Arm the forwarder to partition on ``cut``, the bytes and whether the client sends
        them (``refuse`` too: see ``Forwarder.partition_on``), start the short scenario
        (``--crew remote``) and return its task and the loop time of the cut; AssertionError if
        the run ends, or ``wait_s`` passes, before the cut."""
        loop = asyncio.get_running_loop()
        pattern, from_client = cut
        self.fwd.partition_on(pattern, from_client=from_client, refuse=refuse)
        scenario: Coroutine[Any, Any, RunResult] = run_scenario(
            SHORT, bus_url=self.bus_url, db_url=self.crew.db_url,
            config_dir=self.crew.config_dir, crew="remote",
        )  # fmt: skip
        run, started = asyncio.create_task(scenario), loop.time()
        while not self.fwd.triggered.is_set():  # the run fails before the cut: say why
            await asyncio.wait({run}, timeout=0.05)
            if run.done():
                run.result()
                raise AssertionError(f"the run ended before the cut: {pattern!r}")
            assert loop.time() < started + wait_s, f"no {pattern!r} in {wait_s:g} s"
        self.at_cut = (self.fwd.accepted, self.fwd.upstream, refuse)
        self.phase(f"partitioned on {pattern!r}")
        return run, loop.time()

    async def run_ends(self, run: asyncio.Task[RunResult], wait_s: float) -> RunResult:
        """The result of ``run`` once it ends; AssertionError after ``wait_s`` seconds, with
        the last lines of every crew process's log (what the crew was doing meanwhile)."""
        try:
            result = await asyncio.wait_for(run, wait_s)
        except TimeoutError:
            tails = "\n".join(
                f"--- {' '.join(p.args)} ({p.log.name})\n{p.tail(25)}" for p in self.crew.processes
            )
            raise AssertionError(f"the run did not end in {wait_s:g} s\n{tails}") from None
        self.phase("run ended")
        return result

    def check_held(self) -> None:
        """Nothing reached the broker through the partition since the cut: new connections
        were refused (``refuse``), or accepted (at least twice: the worker tried again) and
        held."""
        accepted, upstream, refuse = self.at_cut
        assert self.fwd.upstream == upstream, "a connection reached the broker in the partition"
        attempts = self.fwd.accepted - accepted
        if refuse:
            assert attempts == 0, attempts
        else:
            assert attempts >= 2, f"{attempts} connection attempts in the partition"

    def check_answered_once(self, result: RunResult, *, most_proposed: int) -> None:
        """The run passed; the task and the later actuate task were answered by the Operator
        (at most ``most_proposed`` answers stored to the one task); one action, executed once
        at the plant by one command; the incident resolved; no dead letter; the audit chain
        verifies."""
        failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.passed]
        assert result.passed, failed
        store, agent = self.store, self.agent
        proposed = store.messages(result.run_id, types=["action.proposed"])
        executed = store.messages(result.run_id, types=["action.executed"])
        assert {m.source for m in [*proposed, *executed]} == {agent}, (proposed, executed)
        assert len({m.causation_id for m in proposed}) == 1, proposed  # the one task
        assert len(proposed) <= most_proposed, proposed
        assert len(executed) == 1, executed
        assert self.handled and self.handled[0].get("executed") == 1, self.handled
        assert [m.source for m in self.commands] == [agent], self.commands
        (action,) = store.actions(run_id=result.run_id)
        assert (action.command, action.status) == ("stop", "executed"), action
        (incident,) = store.incidents(result.run_id)
        assert (incident.status, incident.outcome) == ("resolved", "resolved"), incident
        assert store.dead_letters() == []
        assert store.verify_audit() == []


@contextlib.asynccontextmanager
async def cut_off_operator(
    bus_url: str,
    server_url: str,
    *,
    label: str,
    query: str,
    config_dir: Path,
    pg_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[CutOff]:
    """Start the crew on ``bus_url`` (a fresh PostgreSQL schema of ``pg_database``) with its
    Operator reaching ``server_url``'s server through a forwarder (``query`` appended to its
    bus URL, after ``&``, when given); stop everything afterwards. Phases are printed with
    ``label`` and the seconds since the start (shown with a failure, or with ``-s``)."""
    began = time.monotonic()

    def phase(what: str) -> None:
        print(f"{label} {time.monotonic() - began:5.1f} s: {what}")

    server = urlparse(server_url)
    fwd = Forwarder((server.hostname or "127.0.0.1", server.port or 0))
    fwd.start()
    handled = gateway_counts(monkeypatch)
    bus = await connect(bus_url)
    commands, heartbeats = await watch_commands_and_heartbeats(bus)
    store: Store | None = None
    try:
        db_url = new_schema(pg_database)
        with crew_of(bus_url, db_url, config_dir, tmp_path / "logs", UP) as crew:
            url = through(bus_url, fwd.port) + (f"&{query}" if query else "")
            worker = crew.spawn(*OPERATOR, bus_url=url)
            crew.wait_ready()
            phase("crew ready")
            store = Store(crew.db_url)
            agent = f"operator-{socket.gethostname()}-{worker.pid}"
            yield CutOff(
                bus_url, fwd, crew, worker, agent, store, commands, heartbeats, handled, phase
            )
    finally:
        fwd.stop()
        await bus.close()
        if store is not None:
            store.dispose()
    phase("done")
