"""Worker benchmark (not a test): CPU and instructions per incident of the role agents alone.

``bench/incidents.py`` measures the whole crew, where a worker's CPU per incident follows the
timing of the other processes. This benchmark takes the timing out, as ``bench/coordinator.py``
does for the Coordinator:

1. **Record.** The whole crew runs in this process on ``memory://`` with SQLite (see
   ``bench/coordinator.py``: ``crew_run``) and answers ``--n`` incidents. Every task the
   Coordinator sent (``crew.tasks.*`` in the conversation log, in order: diagnose,
   propose_action, assess_safety, actuate, review) is read back as its wire bytes, with the
   runs and the actions and approvals the actuate tasks execute (reset to ``approved``, not
   consumed: as they were when the task was sent). ``--save FILE`` writes this to a JSON file
   and stops; ``--load FILE`` replays such a file instead of recording.
2. **Replay.** For each database (``--db``) the runs, actions and approvals are written to a
   fresh database, and one :class:`~plantcrew.crews.worker.WorkerHost` of the four task roles
   (as ``plantcrew worker``, one agent per role) on a ``memory://`` bus handles the recorded
   tasks one after the other: each is parsed from its bytes (``Message.from_bytes``, as a bus
   delivers it) and handed to its role's worker agent (``Agent._on_task``: the run's context
   and agent, the model call on the playbook, the policy, the claim and record of the command
   in the database, the answer published on ``crew.events``). The actuate task's command goes
   over the bus to a ``PlantGateway`` in this process (``bench/incidents.py``'s plant), whose
   small cost is counted too. The first ``--warmup`` incidents are replayed unmeasured (lazy
   imports, caches, the thread pool), then ``--measure`` incidents (default: the rest) are
   measured: CPU ms of this process per incident (``time.process_time``) and per task.

``--callgrind``: instructions instead of CPU time, which a loaded machine does not change.
This script runs itself under ``valgrind --tool=callgrind --instr-atstart=no`` on the
recording (saved to a file) for each database; the child turns callgrind's instrumentation on
and off around the measured part (client requests from a small C library it builds with gcc
and valgrind's ``callgrind.h``), so the file's total is the instructions of the measured
incidents alone, and the rest runs a few times faster than instrumented. ``PYTHONHASHSEED``
is set (0 unless given) so that two runs do the same work.

Run:  /work/venv/bin/python bench/worker.py [--n 45] [--warmup 5] [--repeat 3]
      [--db postgresql://postgres@127.0.0.1:5432/test,sqlite] [--callgrind]
It prints its figures and the exact command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from plantcrew.bus.memory import MemoryBus
from plantcrew.crews.worker import WorkerAgent, WorkerHost
from plantcrew.messages import Message, Task
from plantcrew.plant.bus_actuator import COMMANDS, PlantGateway
from plantcrew.store import Action, Approval, MessageRecord, Run, Store

sys.path.insert(0, str(Path(__file__).parent))  # bench/coordinator.py (it loads incidents.py)
import coordinator

incidents = coordinator.incidents

TASKS = "crew.tasks."


async def record(n: int, inflight: int, config: Path) -> dict[str, Any]:
    """Run ``n`` incidents through the in-process crew; the recording (JSON-able): ``runs``,
    ``actions`` and ``approvals`` (as before execution) and ``tasks`` (wire text, in order)."""
    async with coordinator.crew_run(n, inflight, config) as (store, runs):
        with store.tx() as s:
            bodies = s.exec(
                select(MessageRecord.body)
                .where(col(MessageRecord.subject).startswith(TASKS))
                .where(col(MessageRecord.run_id).in_(runs))
                .order_by(col(MessageRecord.seq))
            ).all()
            stored = s.exec(select(Run).where(col(Run.id).in_(runs))).all()
            actions = s.exec(select(Action).where(col(Action.run_id).in_(runs))).all()
            approvals = s.exec(select(Approval).where(col(Approval.run_id).in_(runs))).all()
            unexecuted = {"status": "approved", "executed_at": None, "receipt": {}, "claim": 0}
            return {
                "runs": [r.model_dump(mode="json") for r in stored],
                "actions": [a.model_dump(mode="json") | unexecuted for a in actions],
                "approvals": [a.model_dump(mode="json") | {"consumed_at": None} for a in approvals],
                "tasks": list(bodies),
            }


def _incident_order(recording: dict[str, Any]) -> list[str]:
    """The runs in the order their first task was sent."""
    order: dict[str, None] = {}
    for body in recording["tasks"]:
        order.setdefault(json.loads(body)["run_id"], None)
    return list(order)


async def replay(
    db_url: str,
    recording: dict[str, Any],
    config: Path,
    warmup: int,
    measure: int | None,
    profile: Path | None = None,
    region: Any = None,
) -> dict[str, float]:
    """Handle the recorded tasks with a fresh WorkerHost on a fresh database at ``db_url``
    (see module doc); CPU and wall seconds, incidents and tasks of the measured part.
    ``profile``: write a cProfile of the measured part there; ``region``: an object whose
    ``start()`` and ``stop()`` are called around the measured part (callgrind's)."""
    runs = _incident_order(recording)
    measured = runs[warmup:] if measure is None else runs[warmup : warmup + measure]
    first, second = set(runs[:warmup]), set(measured)
    store = Store(db_url)
    bus = MemoryBus(f"memory://workerbench{os.getpid()}-{time.monotonic_ns()}")
    try:
        with store.tx() as s:
            for rows, table in ((recording["runs"], Run), (recording["actions"], Action)):
                s.add_all(table.model_validate(r) for r in rows)  # type: ignore[attr-defined]
            s.flush()
            s.add_all(Approval.model_validate(r) for r in recording["approvals"])
        host = WorkerHost(bus, store, roles=incidents.TASK_ROLES, config_dir=config)
        gateway = PlantGateway(bus, incidents.BenchPlant(), run_id=None, subject=f"{COMMANDS}.*")
        await gateway.start()
        by_capability = {
            cap: agent
            for agent in host.agents
            if isinstance(agent, WorkerAgent)
            for cap in agent.task_capabilities
        }

        async def handle(bodies: list[bytes]) -> None:
            for body in bodies:
                msg = Message.from_bytes(body)
                assert isinstance(msg.payload, Task)
                await by_capability[msg.payload.capability]._on_task(msg)

        async def measured(bodies: list[bytes]) -> None:  # its own frame for a profiler
            await handle(bodies)

        tasks = [(json.loads(b)["run_id"], b.encode()) for b in recording["tasks"]]
        await handle([b for r, b in tasks if r in first])
        work = [b for r, b in tasks if r in second]
        profiler = cProfile.Profile() if profile else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        if region is not None:
            region.start()
        await measured(work)
        if region is not None:
            region.stop()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await gateway.stop()
        return {"cpu_s": cpu, "wall_s": wall, "incidents": len(second), "tasks": len(work)}
    finally:
        await bus.close()
        store.dispose()


REGION_C = r"""
#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


def callgrind_region(workdir: Path) -> Any:
    """``start()``/``stop()`` of callgrind's instrumentation (client requests in a small C
    library built here with gcc and valgrind's headers)."""
    import ctypes

    src, lib = workdir / "region.c", workdir / "region.so"
    src.write_text(REGION_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def _callgrind_total(out_file: Path) -> int:
    """Instructions (Ir) of a callgrind output file."""
    text = out_file.read_text()
    found = re.search(r"^totals:\s*(\d+)", text, re.M)
    if found is None:
        raise RuntimeError(f"no totals in {out_file}")
    return int(found.group(1))


def callgrind(saved: Path, db: str, warmup: int, measure: int, workdir: Path) -> tuple[int, str]:
    """Instructions of the replay of ``measure`` incidents of ``saved`` on ``db`` (this script
    under callgrind, instrumented only while it handles them) and the command."""
    out = workdir / f"callgrind.{db.split(':')[0]}.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
           sys.executable, __file__, "--load", str(saved), "--db", db, "--warmup", str(warmup),
           "--measure", str(measure), "--repeat", "1", "--region"]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _callgrind_total(out), f"PYTHONHASHSEED={env['PYTHONHASHSEED']} {shlex.join(cmd)}"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=45, help="incidents recorded")
    ap.add_argument("--inflight", type=int, default=32, help="incidents open at once (recording)")
    ap.add_argument("--warmup", type=int, default=5, help="incidents replayed first, unmeasured")
    ap.add_argument("--measure", type=int, default=None, help="incidents measured (default: rest)")
    ap.add_argument("--repeat", type=int, default=3, help="replays per database (median)")
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test,sqlite")
    ap.add_argument("--save", type=Path, help="record, write the recording here and stop")
    ap.add_argument("--load", type=Path, help="replay this recording instead of recording")
    ap.add_argument("--callgrind", action="store_true", help="instructions per incident")
    ap.add_argument("--profile", type=Path, help="cProfile of the measured part (one replay)")
    ap.add_argument("--region", action="store_true", help=argparse.SUPPRESS)  # under callgrind
    args = ap.parse_args()
    from plantcrew.logs import configure

    configure("WARNING")
    load = os.getloadavg()
    config = incidents.config_dir()
    if args.load:
        recording = json.loads(args.load.read_text())
    else:
        recording = await record(args.n, args.inflight, config)
    if args.save:
        args.save.write_text(json.dumps(recording))
        print(f"saved {len(recording['tasks'])} tasks of {len(recording['runs'])} incidents")
        return
    runs = len(recording["runs"])
    measure = args.measure if args.measure is not None else runs - args.warmup
    print(f"{len(recording['tasks'])} tasks of {runs} incidents; {args.warmup} replayed first "
          f"unmeasured, {measure} measured")  # fmt: skip
    per_incident = len(recording["tasks"]) / runs
    for db in args.db.split(","):
        name = "sqlite" if db == "sqlite" else "postgresql"
        if args.callgrind:
            with tempfile.TemporaryDirectory(prefix="workerbench") as tmp:
                saved = args.load or Path(tmp) / "recording.json"
                if not args.load:
                    saved.write_text(json.dumps(recording))
                ir, cmd = callgrind(saved, db, args.warmup, measure, Path(tmp))
            each = ir / measure / 1e6
            print(f"{name:10s}  worker instructions per incident: {each:8.2f} M "
                  f"({each / per_incident:.2f} M per task)\n            by: {cmd}")  # fmt: skip
            continue
        cpu, wall = [], []
        region = None
        if args.region:
            region_dir = Path(tempfile.mkdtemp(prefix="workerbench-region"))
            region = callgrind_region(region_dir)
        for _ in range(args.repeat):
            with incidents.fresh_database(db) as url:
                got = await replay(
                    url, recording, config, args.warmup, measure, args.profile, region
                )
            cpu.append(1000 * got["cpu_s"] / got["incidents"])
            wall.append(1000 * got["wall_s"] / got["incidents"])
        print(f"{name:10s}  worker CPU ms per incident: median {statistics.median(cpu):6.2f} "
              f"(runs {', '.join(f'{c:.2f}' for c in cpu)})   wall ms per incident: median "
              f"{statistics.median(wall):6.2f}   ({got['tasks'] / got['incidents']:.1f} tasks "
              "per incident)")  # fmt: skip
    end = os.getloadavg()
    print(f"load average {load[0]:.1f} before, {end[0]:.1f} after ({os.cpu_count()} cpus)")
    print("command: " + incidents.command_line())


if __name__ == "__main__":
    asyncio.run(main())
