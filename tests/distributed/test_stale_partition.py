"""A network partition long enough that the NATS client of a worker calls its connection stale,
drops it and reconnects, which succeeds once the partition heals.

``test_partition.py`` heals before the client notices anything (its TCP connection resumes);
here the Operator worker's connection goes silent for :data:`HOLD_S`, past the client's stale
detection (the worker pings every second and gives up after 2 unanswered pings:
``?ping_interval=1&max_outstanding_pings=2`` on its bus URL), and every reconnect attempt fails
until the partition heals, in one of two ways:

- ``hold``: a new connection is accepted but reaches nothing (packets dropped beyond the first
  hop): each attempt times out waiting for the server's INFO (``connect_timeout=1``);
- ``refuse``: a new connection is refused at once (ECONNREFUSED).

The crew: ``plantcrew up`` (Coordinator, Monitor, Diagnostic, Safety, Reviewer) on the
machine's NATS (a fresh namespace) and PostgreSQL (a fresh schema), and the only Operator,
``plantcrew worker --role operator``, reaching NATS through a :class:`tests.forwarder.Forwarder`
that partitions at one of two moments (:data:`CUTS`):

- ``task`` (with ``hold``): the server delivers the Operator its first task
  (``crew.tasks.propose_action``); the task is held in the partition and never reaches the
  worker, so the server must deliver it again (after its ack wait) to the reconnected worker;
- ``answer`` (with ``refuse``): the Operator sends its answer to that task; the answer and the
  worker's acknowledgement are held, its handler overruns the ack wait, and the task comes
  back to the reconnected worker while the held answer gets through on the new connection.

Checked: the worker says the connection dropped and, only after the heal, that it
reconnected; the run passes its expectations; the task was answered by the Operator (delivered
again, not lost) and so was the later actuate task (its durable consumers resumed); one action,
executed once at the plant by one command; the worker heartbeats again, idle; every durable
message is acknowledged; nothing is dead-lettered; the audit chain verifies. Each case takes
about 35 s once the crew is up (its processes start in 10-50 s, with the machine's load).
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from plantcrew.bus import connect
from plantcrew.scenarios.runner import run_scenario
from plantcrew.store import Store
from tests.conftest import NATS_URL, bus_url_for
from tests.distributed.conftest import (
    OPERATOR,
    crew_of,
    new_schema,
    until,
    watch_commands_and_heartbeats,
)
from tests.distributed.test_crew import SHORT, gateway_counts, settled
from tests.distributed.test_partition import UP
from tests.forwarder import Forwarder, through

STALE_FAST = "ping_interval=1&max_outstanding_pings=2&connect_timeout=1"
"""The Operator's bus URL query: its connection is called stale after about 3 s of silence
(3 pings, one a second, the last one over the limit of 2 outstanding), and a reconnect attempt
waits at most 1 s for the server."""
HOLD_S = 8.0
"""How long the partition holds: past stale detection (about 3 s, up to 4 s), several failed
reconnect attempts, and the server's ack wait of a held task (6 s: ``short_ack_config``)."""
CUTS = {
    # the server delivers the Operator its first task: the MSG line (subject, then sid)
    "task": (b".crew.tasks.propose_action ", False),
    # the Operator sends its answer to that task (the JSON of the message it publishes)
    "answer": (b'"type":"action.proposed"', True),
}
"""Where the partition starts: the bytes it holds first, and whether the client sends them."""
WAIT_S = 30.0  # the longest the test waits for any one thing


@pytest.mark.parametrize(("cut", "mode"), [("task", "hold"), ("answer", "refuse")])
async def test_a_worker_cut_off_past_stale_detection_reconnects_and_resumes(
    cut: str,
    mode: str,
    short_ack_config: Path,
    pg_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    began = time.monotonic()

    def phase(what: str) -> None:  # shown with the failure, or with -s
        print(f"{cut}/{mode} {time.monotonic() - began:5.1f} s: {what}")

    nats = urlparse(NATS_URL)
    fwd = Forwarder((nats.hostname or "127.0.0.1", nats.port or 4222))
    fwd.start()
    bus_url = bus_url_for("nats")
    loop = asyncio.get_running_loop()
    handled = gateway_counts(monkeypatch)

    bus = await connect(bus_url)
    commands, heartbeats = await watch_commands_and_heartbeats(bus)
    store: Store | None = None
    try:
        db_url = new_schema(pg_database)
        with crew_of(bus_url, db_url, short_ack_config, tmp_path / "logs", UP) as crew:
            worker = crew.spawn(*OPERATOR, bus_url=through(bus_url, fwd.port) + "&" + STALE_FAST)
            crew.wait_ready()
            phase("crew ready")
            agent = f"operator-{socket.gethostname()}-{worker.pid}"
            store = Store(crew.db_url)

            def log_says(line: str) -> bool:
                return line in worker.log.read_text(errors="replace")

            def dropped() -> bool:  # plantcrew.bus.nats logs the client's callbacks
                return log_says("nats disconnected")

            def reconnected() -> bool:
                return log_says("nats reconnected")

            pattern, from_client = CUTS[cut]
            fwd.partition_on(pattern, from_client=from_client, refuse=mode == "refuse")
            scenario = run_scenario(
                SHORT, bus_url=bus_url, db_url=crew.db_url, config_dir=crew.config_dir,
                crew="remote",
            )  # fmt: skip
            run, started = asyncio.create_task(scenario), loop.time()
            while not fwd.triggered.is_set():  # the run fails before the cut: say why
                await asyncio.wait({run}, timeout=0.05)
                if run.done():
                    run.result()
                    raise AssertionError(f"the run ended before the cut: {pattern!r}")
                assert loop.time() < started + WAIT_S, f"no {pattern!r} in {WAIT_S:g} s"
            cut_at = loop.time()
            phase(f"partitioned on {pattern!r}")
            accepted, upstream = fwd.accepted, fwd.upstream

            # past stale detection: the worker drops its connection and cannot get a new one
            await until("the worker drops its connection", dropped, timeout=WAIT_S)
            phase("the worker dropped its connection")
            await asyncio.sleep(max(0.0, cut_at + HOLD_S - loop.time()))
            assert not reconnected(), "reconnected through a partition"
            assert fwd.upstream == upstream, "a connection reached NATS through the partition"
            attempts = fwd.accepted - accepted  # hold: accepted, then nothing; refuse: none
            if mode == "hold":
                assert attempts >= 2, f"{attempts} reconnect attempts in {HOLD_S:g} s"
            else:
                assert attempts == 0, attempts
            fwd.heal()
            healed_at = loop.time()
            phase("healed")
            await until("the worker reconnects", reconnected, timeout=WAIT_S)
            phase("the worker reconnected")

            result = await asyncio.wait_for(run, WAIT_S)
            phase("run ended")
            failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.passed]
            assert result.passed, failed

            # the worker is back: it heartbeats again, idle
            back = await until(
                f"{agent} heartbeats after the partition healed",
                lambda: [hb for t, hb in heartbeats if t > healed_at and hb.agent_id == agent],
            )
            assert back[-1].in_flight == 0 and not back[-1].stopping
            await settled(bus_url, timeout=WAIT_S)  # every durable message acknowledged
            await asyncio.sleep(0.5)  # anything still in flight on a plain subject lands

            # the held task was delivered again and answered by the one Operator (after its
            # held answer, cut: once more), which then got the later actuate task too: its
            # durable consumers resumed
            proposed = store.messages(result.run_id, types=["action.proposed"])
            executed = store.messages(result.run_id, types=["action.executed"])
            assert {m.source for m in [*proposed, *executed]} == {agent}, (proposed, executed)
            assert len({m.causation_id for m in proposed}) == 1, proposed  # the one task
            # (the held answer is stored once when it gets through within its publish timeout)
            assert len(proposed) <= (1 if cut == "task" else 2), proposed
            assert len(executed) == 1, executed
            # executed once at the plant, by one command
            assert handled and handled[0].get("executed") == 1, handled
            assert [m.source for m in commands] == [agent], commands
            (action,) = store.actions(run_id=result.run_id)
            assert (action.command, action.status) == ("stop", "executed"), action
            (incident,) = store.incidents(result.run_id)
            assert (incident.status, incident.outcome) == ("resolved", "resolved"), incident
            assert store.dead_letters() == []
            assert store.verify_audit() == []
    finally:
        fwd.stop()
        await bus.close()
        if store is not None:
            store.dispose()
    phase("done")
