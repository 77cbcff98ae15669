"""Coordinator benchmark (not a test): CPU per incident of the Coordinator's state machine alone.

``bench/incidents.py`` measures the whole crew; there the Coordinator's CPU per incident moves
by ±10 % between runs of the same code, because group commit's batch sizes follow the timing
of the other processes. This benchmark takes the timing out:

1. **Record.** The whole crew runs in this process on ``memory://`` with a SQLite database
   (the Coordinator host, one worker of each task role, the playbook model, the driver of
   ``bench/incidents.py``) and answers ``--n`` incidents. Every ``crew.events`` message the
   Coordinator applied is read back from the conversation log, in the order it was applied,
   with the runs.
2. **Replay.** For each database (``--db``: a fresh PostgreSQL database, and/or SQLite) the
   runs are written, and one :class:`~plantcrew.crews.coordinator.Coordinator` per run (every
   capability live, as in the recording) applies the recorded events one after the other, one
   transaction each (``Coordinator.apply``: log, state change, outbox, audit; nothing is
   published). It reports CPU ms of this process per incident (``time.process_time``), wall
   ms per incident, and statements are the real ones. The same events give the same work on
   every run, so two versions of the code can be compared with a few percent of noise.

No group commit: one transaction per event, so the figure is the handlers' cost plus one
commit per event (the process bench amortizes the commits over batches).

Run:  /work/venv/bin/python bench/coordinator.py [--n 200] [--repeat 3]
      [--db postgresql://postgres@127.0.0.1:5432/test,sqlite]
It prints its figures and the exact command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlmodel import col, select

from plantcrew.bus.memory import MemoryBus
from plantcrew.crews.clocks import RunClock, as_utc
from plantcrew.crews.config import CoordinatorSettings, CrewConfig
from plantcrew.crews.coordinator import Coordinator
from plantcrew.crews.recall import LessonRecall
from plantcrew.crews.registry import CapabilityRegistry
from plantcrew.detect import SignatureBook, load_signatures
from plantcrew.llm.budget import Budgets
from plantcrew.llm.config import load_models_config
from plantcrew.messages import AgentHeartbeat, Capability, Message, Subjects
from plantcrew.store import MessageRecord, Run, Store

_spec = importlib.util.spec_from_file_location(
    "bench_incidents", Path(__file__).with_name("incidents.py")
)
assert _spec is not None and _spec.loader is not None
incidents = importlib.util.module_from_spec(_spec)
sys.modules["bench_incidents"] = incidents
_spec.loader.exec_module(incidents)


@contextlib.asynccontextmanager
async def crew_run(n: int, inflight: int, config: Path) -> AsyncIterator[tuple[Store, list[str]]]:
    """Run ``n`` incidents through the in-process crew configured by ``config`` (a config
    dir) on ``memory://`` and a fresh SQLite database; yields that database's store and the
    runs (every incident resolved; RuntimeError otherwise) until the context ends."""
    with incidents.fresh_database("sqlite") as db_url:
        store = Store(db_url)
        bus = await incidents.connect(f"memory://coordbench{os.getpid()}")
        crew = CrewConfig.load(config / "crew.yaml")
        coord = incidents.CoordinatorHost(
            bus, store, config=crew, concurrency=8,
            signatures=load_signatures(config / "signatures.yaml"),
            budgets=load_models_config(config / "models.yaml").budgets,
        )  # fmt: skip
        work = incidents.WorkerHost(bus, store, roles=incidents.TASK_ROLES, config_dir=config)
        await coord.start()
        await work.start()
        try:
            driver = incidents.Driver(bus, store)
            await driver.start()
            await driver.ready()
            runs = driver.make_runs(n)
            await driver.drive(runs, inflight)
            resolved = sum(1 for r in runs if driver.closed.get(r, (0, ""))[1] == "resolved")
            if resolved != n:
                raise RuntimeError(f"recording: {resolved}/{n} incidents resolved")
        finally:
            await work.stop()
            await coord.stop()
            await bus.close()
        try:
            yield store, runs
        finally:
            store.dispose()


async def record(n: int, inflight: int, config: Path) -> tuple[list[Run], list[Message]]:
    """Run ``n`` incidents through the in-process crew configured by ``config`` (a config
    dir); the runs and the events applied."""
    async with crew_run(n, inflight, config) as (store, runs):
        with store.tx() as s:
            rows = s.exec(
                select(MessageRecord)
                .where(col(MessageRecord.subject) == Subjects.EVENTS)
                .where(col(MessageRecord.run_id).in_(runs))
                .order_by(col(MessageRecord.seq))
            ).all()
            events = [Message.from_bytes(r.body.encode()) for r in rows]
            stored = s.exec(select(Run).where(col(Run.id).in_(runs))).all()
            run_rows = [Run.model_validate(r.model_dump()) for r in stored]
    return run_rows, events


def replay(
    db_url: str,
    runs: list[Run],
    events: list[Message],
    settings: CoordinatorSettings,
    signatures: SignatureBook,
    budgets: Budgets,
) -> dict[str, float]:
    """Apply ``events`` to a fresh database at ``db_url`` with Coordinators of ``settings``
    (their diagnose tasks carry the lessons ``signatures`` recalls and the status of
    ``budgets``, as in a Coordinator process); CPU and wall seconds."""
    store = Store(db_url)
    try:
        with store.tx() as s:
            for run in runs:
                s.add(Run.model_validate(run.model_dump()))
        registry = CapabilityRegistry(ttl_s=1e9)
        recall = LessonRecall(signatures)
        agents = AgentHeartbeat(agent_id="bench", role="crew", capabilities=list(Capability))
        registry.heard(agents, 0.0)
        # nothing is published; the Coordinator asks the bus only its max_message_bytes
        bus = MemoryBus(f"memory://coordbench-replay{os.getpid()}")
        coordinators: dict[str, Coordinator] = {}
        for run in runs:
            started = as_utc(run.started_at)
            coord = Coordinator(
                bus, store, RunClock(started), run_id=run.id, run_started=started,
                settings=settings, budgets=budgets, recall=recall,  # shared, as in a host
            )  # fmt: skip
            coord.registry = registry
            coordinators[run.id] = coord
        cpu0, wall0 = time.process_time(), time.perf_counter()
        applied = 0
        for msg in events:
            if coordinators[msg.run_id or ""].apply(msg) is not None:
                applied += 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if applied != len(events):
            raise RuntimeError(f"replay applied {applied} of {len(events)} events")
        return {"cpu_s": cpu, "wall_s": wall}
    finally:
        store.dispose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="incidents recorded and replayed")
    ap.add_argument("--inflight", type=int, default=32, help="incidents open at once (recording)")
    ap.add_argument("--repeat", type=int, default=3, help="replays per database (median)")
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test,sqlite")
    args = ap.parse_args()
    from plantcrew.logs import configure

    configure("WARNING")
    load = os.getloadavg()
    config = incidents.config_dir()
    settings = CrewConfig.load(config / "crew.yaml").coordinator
    signatures = load_signatures(config / "signatures.yaml")
    budgets = load_models_config(config / "models.yaml").budgets
    runs, events = await record(args.n, args.inflight, config)
    print(f"recorded {len(events)} events of {len(runs)} incidents "
          f"({len(events) / len(runs):.1f} events per incident)")  # fmt: skip
    for db in args.db.split(","):
        cpu, wall = [], []
        for _ in range(args.repeat):
            with incidents.fresh_database(db) as url:
                got = replay(url, runs, events, settings, signatures, budgets)
            cpu.append(1000 * got["cpu_s"] / len(runs))
            wall.append(1000 * got["wall_s"] / len(runs))
        name = "sqlite" if db == "sqlite" else "postgresql"
        print(f"{name:10s}  Coordinator CPU ms per incident: median {statistics.median(cpu):6.2f} "
              f"(runs {', '.join(f'{c:.2f}' for c in cpu)})   wall ms per incident: median "
              f"{statistics.median(wall):6.2f}")  # fmt: skip
    end = os.getloadavg()
    print(f"load average {load[0]:.1f} before, {end[0]:.1f} after ({os.cpu_count()} cpus)")
    print("command: " + incidents.command_line())


if __name__ == "__main__":
    asyncio.run(main())
