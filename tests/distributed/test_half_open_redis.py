"""A worker's connections to Redis go half-open mid-task: the network partitions for
:data:`HOLD_S`, past the client's socket timeout (5 s) and the group's claim idle time (the ack
wait plus a second: 6 s here), and when it heals the path the old connections took is gone
(a NAT or connection-tracking entry expired): their sockets stay open but hear nothing, no
FIN, no RST, while new connections go through. The ``redis://`` counterpart of
``test_stale_partition.py``.

The crew: ``plantcrew up`` (Coordinator, Monitor, Diagnostic, Safety, Reviewer) on the
machine's Redis (a fresh namespace) and PostgreSQL (a fresh schema), and the only Operator,
``plantcrew worker --role operator``, reaching Redis through a
:class:`tests.forwarder.Forwarder` that partitions at one of two moments (:data:`CUTS`) and
heals with ``half_open=True``:

- ``task`` (with ``hold``: a new connection is accepted but reaches nothing): Redis hands the
  Operator its first task (``crew.tasks.propose_action``, an ``XREADGROUP`` reply); the task is
  lost in the partition but pending for the Operator's consumer, so once it is idle past the
  claim idle time the Operator must take it over (``XAUTOCLAIM``) on a new connection;
- ``answer`` (with ``refuse``: a new connection is refused at once): the Operator sends its
  answer to that task; the answer is lost in the partition, the publish gives up after its
  timeout (10 s) and the task, still pending, is claimed again and answered after the heal.

Checked: the worker says its reads failed; nothing reached Redis through the partition; the
run passes its expectations (the later actuate task was taken and the plant's reply to the
Operator's command heard: its pub/sub connection is back too); the task was answered once, by
the Operator; one action, executed once at the plant by one command; the worker heartbeats
again, idle; every durable message is acknowledged; nothing is dead-lettered; the audit chain
verifies. Before the fix, the pub/sub connection of the Operator stayed deaf after the heal:
its request to the plant timed out although the plant had stopped the pump.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import REDIS_URL, bus_url_for
from tests.distributed.conftest import FULL, until
from tests.distributed.cut_off import CASES, cuts
from tests.distributed.test_crew import settled

HOLD_S = 12.0
"""How long the partition holds: past the client's socket timeout (5 s), the claim idle time
of a held task (6 s: ``short_ack_config``) and the publish timeout of a held answer (10 s)."""
CUTS = cuts(b".crew.tasks.propose_action")
"""Where the partition starts; ``task``: Redis hands the Operator its first task (the
XREADGROUP reply names the stream)."""
WAIT_S = 60.0  # the longest the test waits for any one thing

pytestmark = pytest.mark.skipif(
    not FULL,
    reason="a worker-fault test on redis:// (about 2 minutes a case): CI runs the worker-fault "
    "tests on NATS; PLANTCREW_TEST_FULL=1 runs them on both brokers. The bus-level half-open "
    "test, tests/bus/test_redis_half_open.py, always runs",
)


@pytest.mark.parametrize(("cut", "mode"), CASES)
async def test_a_worker_whose_connections_went_half_open_finishes_its_task_once(
    cut: str, mode: str, cut_off: Any
) -> None:
    bus_url = bus_url_for("redis")
    loop = asyncio.get_running_loop()
    async with cut_off(bus_url, REDIS_URL, label=f"{cut}/{mode}", query="") as c:

        def read_failed() -> bool:  # plantcrew.bus.redis: a member's read failed
            return c.log_says("read failed; retrying")

        run, cut_at = await c.run_until_cut(CUTS[cut], refuse=mode == "refuse", wait_s=WAIT_S)

        await until("the worker's reads fail", read_failed, timeout=WAIT_S)
        c.phase("the worker's reads failed")
        await asyncio.sleep(max(0.0, cut_at + HOLD_S - loop.time()))
        # hold: new connections accepted, then nothing; refuse: none
        c.check_held()
        c.fwd.heal(half_open=True)
        healed_at = loop.time()
        c.phase("healed, the old connections half-open")

        # the worker is back: it heartbeats again (on a new connection)
        await until(
            f"{c.agent} heartbeats after the partition healed",
            lambda: c.heartbeats_since(healed_at),
            timeout=WAIT_S,
        )
        c.phase("the worker heartbeats again")
        result = await c.run_ends(run, WAIT_S * 3)
        await settled(bus_url, timeout=WAIT_S)  # every durable message acknowledged
        await asyncio.sleep(0.5)  # anything still in flight on a plain subject lands
        last = c.heartbeats_since(healed_at)[-1]
        assert last.in_flight == 0 and not last.stopping, last

        # the task was taken over after the heal and answered once, by the one Operator
        # (what it sent into the partition never reached Redis), which then got the later
        # actuate task too and heard the plant's reply; one action, executed once at the
        # plant by one command
        c.check_answered_once(result, most_proposed=1)
