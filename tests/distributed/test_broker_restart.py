"""The broker dies (SIGKILL) in the middle of a run and comes back on the same data: nats-server
with JetStream on disk, redis-server with an append-only file. The crew's process and the
runner reconnect, nothing durable is lost, and the run still passes.

Each test starts its OWN broker on a free loopback port (the shared servers serve other test
runs) and its own crew process; both are always stopped.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from plantcrew.scenarios.runner import run_scenario
from tests.bus.test_broker_restart import Broker
from tests.distributed.conftest import crew_of, new_schema
from tests.distributed.test_crew import SHORT

RESTART_AT_S = 460.0  # plant s: the fault starts at 450; the incident opens about now


@pytest.mark.parametrize("kind", ["nats", "redis"])
async def test_the_run_completes_across_a_broker_restart(
    kind: str,
    request: pytest.FixtureRequest,
    crew_config: Path,
    pg_database: str,
    tmp_path: Path,
) -> None:
    broker: Broker = request.getfixturevalue(f"{kind}_broker")
    bus_url = f"{kind}://127.0.0.1:{broker.port}?namespace=restart"
    restarts: list[float] = []
    back = threading.Event()

    def restart_mid_incident(t: float) -> None:
        if restarts or t < RESTART_AT_S:
            return
        restarts.append(t)
        broker.kill()  # now, mid-step: the crew is working on the incident

        def start_again() -> None:
            threading.Event().wait(1.0)
            broker.start()
            back.set()

        threading.Thread(target=start_again, daemon=True).start()

    with crew_of(bus_url, new_schema(pg_database), crew_config, tmp_path / "logs", ("up",)) as crew:
        result = await run_scenario(
            SHORT, bus_url=bus_url, db_url=crew.db_url, config_dir=crew_config, crew="remote",
            on_checkpoint=restart_mid_incident,
        )  # fmt: skip
        assert restarts and back.wait(30), "the broker was not restarted during the run"
        failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.passed]
        assert result.passed, "; ".join(failed) + "\n" + crew.processes[0].tail()
        assert crew.processes[0].proc is not None and crew.processes[0].proc.poll() is None
    await asyncio.sleep(0)


# the brokers of tests/bus/test_broker_restart.py: own servers on free ports, own data dirs
from tests.bus.test_broker_restart import nats_broker, redis_broker  # noqa: E402, F401
