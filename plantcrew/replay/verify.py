"""Exact replay: does the current code, given the recorded answers, send the same messages?

:func:`verify_run` re-executes a recorded run (:func:`~plantcrew.replay.sandbox.reexecute`:
the recorded scenario and seed, model answers from the record, the simulated actuator, the
playbook live unless told otherwise) and compares, agent by agent, the messages each one sent
with those it sent in the record, in canonical form (:mod:`plantcrew.replay.canon`: ids and
volatile figures aside, everything the message says, including each model call's prompt and
answer). Actions and their actuator receipts (the tool results) are compared too.

The report names the first divergence: the position in the original log, plant time, agent,
message type and the fields that differ, or says there is none.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantcrew.replay.canon import normalise_log
from plantcrew.replay.compare import Divergence, compare_actions, compare_logs
from plantcrew.replay.sandbox import Reexecution, reexecute
from plantcrew.replay.timeline import Timeline, load_timeline
from plantcrew.store import Action, MessageRecord, Store


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_run`. ``ok`` when no agent's messages and no action
    differ and every recorded answer of a wrapped deployment was asked for."""

    run_id: str
    replay_run_id: str
    compared: int
    replayed: int
    agents: list[str]
    divergences: list[Divergence]
    action_differences: list[str]
    reexecution: Reexecution
    wall_s: float

    @property
    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    @property
    def ok(self) -> bool:
        return (
            not self.divergences
            and not self.action_differences
            and not (self.reexecution.unrecorded or self.reexecution.unused)
        )

    def to_json(self) -> dict[str, Any]:
        r = self.reexecution
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "first_divergence": self.first.to_json() if self.first else None,
            "divergences": [d.to_json() for d in self.divergences],
            "action_differences": self.action_differences,
            "messages_compared": self.compared,
            "messages_replayed": self.replayed,
            "agents": self.agents,
            "model_calls": {
                "served_from_record": r.served,
                "live": r.live,
                "failed_as_recorded": r.refused,
                "unrecorded": r.unrecorded,
                "unused_records": r.unused,
            },
            "stopped_at": r.stop_at,
            "replay_run_id": self.replay_run_id,
            "wall_seconds": round(self.wall_s, 3),
        }


def _records(db_url: str, run_id: str) -> tuple[list[MessageRecord], list[Action]]:
    store = Store(db_url)
    try:
        return store.messages(run_id), store.actions(run_id=run_id)
    finally:
        store.dispose()


async def verify_timeline(
    timeline: Timeline,
    *,
    config_dir: Path | None = None,
    record_playbook: bool = False,
    workdir: Path | None = None,
) -> VerifyReport:
    """Verify a run already read back (see module doc); ``workdir`` keeps the scratch
    database and config (default: a temporary folder, removed afterwards)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="plantcrew-verify-") as tmp:
        work = workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rx = await reexecute(
            timeline, work, mode="verify", config_dir=config_dir, record_playbook=record_playbook
        )
        records, actions = _records(rx.db_url, rx.run_id)
    # a run whose agents were worker processes (on a broker) named them after their hosts;
    # the re-execution runs them in-process: compare such runs by role
    by_role = not timeline.in_process
    original = normalise_log(timeline.steps, timeline.run.id, by_role=by_role)
    replayed = normalise_log(records, rx.run_id, by_role=by_role)
    until = rx.stop_at
    divergences = compare_logs(original, replayed, until)
    action_diffs = compare_actions(timeline.actions, timeline.run.id, actions, rx.run_id)
    compared = [m for m in original if until is None or m.plant_time <= until + 1e-9]
    return VerifyReport(
        run_id=timeline.run.id,
        replay_run_id=rx.run_id,
        compared=len(compared),
        replayed=len(replayed),
        agents=sorted({m.source for m in compared}),
        divergences=divergences,
        action_differences=action_diffs,
        reexecution=rx,
        wall_s=time.perf_counter() - start,
    )


async def verify_run_async(db_url: str, run_id: str, **kwargs: Any) -> VerifyReport:
    """Read run ``run_id`` from ``db_url`` and verify it (see :func:`verify_timeline`).

    Raises NotFoundError for an unknown run, ReplayError when it cannot be re-executed."""
    store = Store(db_url)
    try:
        timeline = load_timeline(store, run_id)
    finally:
        store.dispose()
    return await verify_timeline(timeline, **kwargs)


def verify_run(db_url: str, run_id: str, **kwargs: Any) -> VerifyReport:
    """Synchronous :func:`verify_run_async` (runs its own event loop)."""
    return asyncio.run(verify_run_async(db_url, run_id, **kwargs))


__all__ = [
    "VerifyReport",
    "verify_run",
    "verify_run_async",
    "verify_timeline",
]
