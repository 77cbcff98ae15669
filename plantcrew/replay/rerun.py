"""Counterfactual re-run: the same scenario again from a message on, with one thing changed.

:func:`rerun` re-executes a recorded run (:func:`~plantcrew.replay.sandbox.reexecute`, fork
mode) with :class:`~plantcrew.replay.sandbox.Changes` (a role's model group, policies,
playbooks, a role's prompt). Model answers of tasks whose answer came before the fork message
are served from the record, so the conversation before it is the recorded one; from the fork
message on, models answer live. People's votes before the fork message are cast again as
recorded; those after it are not (the scenario's scripted human answers as it did). The
new run is stored in the original's database as a fork: ``Run.parent_run_id`` is the
original, ``Run.fork_from_message_id`` the fork message, and ``run.config["fork"]`` says what
changed.

Changes to deterministic code and configuration (policies, crew settings) act from the start
of the re-run; :class:`ForkReport.prefix` says whether the conversation before the fork
message still came out as recorded (and where it first did not). When a role's model group
changes, which group and deployment served a call before the fork is not compared (the
answers are the recorded ones, served through the new group).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plantcrew.replay.canon import Canon, NormalMessage, normalise_log
from plantcrew.replay.compare import Divergence, compare_logs
from plantcrew.replay.sandbox import Changes, Reexecution, reexecute
from plantcrew.replay.timeline import Timeline, load_timeline
from plantcrew.store import Store


@dataclass
class ForkReport:
    """A stored fork: its id, the original, the fork message, the changes, the first
    divergence of the conversation before the fork message (None: it is as recorded)."""

    run_id: str
    parent_run_id: str
    fork_from_message_id: str
    fork_seq: int
    changes: Changes
    prefix: Divergence | None
    prefix_messages: int
    reexecution: Reexecution

    def to_json(self) -> dict[str, Any]:
        r = self.reexecution
        return {
            "run_id": self.run_id,
            "parent_run_id": self.parent_run_id,
            "fork_from_message_id": self.fork_from_message_id,
            "fork_seq": self.fork_seq,
            "changes": self.changes.to_json(),
            "prefix_as_recorded": self.prefix is None,
            "prefix_divergence": self.prefix.to_json() if self.prefix else None,
            "prefix_messages": self.prefix_messages,
            "passed": r.passed,
            "model_calls": {
                "served_from_record": r.served,
                "live": r.live,
                "failed_as_recorded": r.refused,
            },
            "wall_seconds": round(r.wall_s, 3),
        }


def tasks_before(timeline: Timeline, fork_seq: int) -> set[str]:
    """Canonical ids of the tasks whose model-backed answer the log has before ``fork_seq``."""
    canon = Canon(timeline.run.id)
    out = set()
    for s in timeline.steps:
        task_id = s.payload.get("task_id")
        if s.seq < fork_seq and s.payload.get("model_calls") and isinstance(task_id, str):
            out.add(canon.text(task_id))
    return out


async def rerun_async(
    db_url: str,
    run_id: str,
    from_message: str,
    changes: Changes,
    *,
    config_dir: Path | None = None,
) -> ForkReport:
    """Fork run ``run_id`` of ``db_url`` at ``from_message`` (an id, a unique id prefix or
    ``#SEQ``) with ``changes`` and store the fork there (see module doc).

    Raises NotFoundError for an unknown run, ReplayError for an unknown fork message, role
    or model group, ConfigError for a bad changed file."""
    from plantcrew.replay.transfer import transfer_run

    store = Store(db_url)
    try:
        timeline = load_timeline(store, run_id)
        fork = timeline.find(from_message)
        before = tasks_before(timeline, fork.seq)
        with tempfile.TemporaryDirectory(prefix="plantcrew-rerun-") as tmp:
            rx = await reexecute(
                timeline,
                Path(tmp),
                mode="fork",
                config_dir=config_dir,
                live_task=lambda key: key not in before,
                changes=changes,
                votes_before_seq=fork.seq,
            )
            scratch = Store(rx.db_url)
            try:
                new_records = scratch.messages(rx.run_id)
                config = dict(scratch.get_run(rx.run_id).config)
                config["fork"] = {
                    "from_message_id": fork.id,
                    "from_seq": fork.seq,
                    **changes.to_json(),
                }
                transfer_run(
                    scratch,
                    store,
                    rx.run_id,
                    parent_run_id=timeline.run.id,
                    fork_from_message_id=fork.id,
                    scenario_path=timeline.run.scenario_path,
                    config=config,
                )
            finally:
                scratch.dispose()
    finally:
        store.dispose()
    by_role = not timeline.in_process
    original = normalise_log(timeline.steps, timeline.run.id, by_role=by_role)[: fork.index]
    counts: dict[str, int] = {}
    for m in original:
        counts[m.source] = counts.get(m.source, 0) + 1
    replayed = [
        m
        for m in normalise_log(new_records, rx.run_id, by_role=by_role)
        if m.nth < counts.get(m.source, 0)
    ]
    if changes.model_groups:  # the change explains which group and deployment answered
        original, replayed = _without_routing(original), _without_routing(replayed)
    divergences = compare_logs(original, replayed)
    return ForkReport(
        run_id=rx.run_id,
        parent_run_id=timeline.run.id,
        fork_from_message_id=fork.id,
        fork_seq=fork.seq,
        changes=changes,
        prefix=divergences[0] if divergences else None,
        prefix_messages=len(original),
        reexecution=rx,
    )


ROUTING_FIELDS = ("model_group", "deployment", "model", "fallback", "error")


def _without_routing(messages: list[NormalMessage]) -> list[NormalMessage]:
    """Messages whose model calls do not say which group or deployment served them."""
    out = []
    for m in messages:
        calls = m.form["payload"].get("model_calls")
        if not calls:
            out.append(m)
            continue
        bare = [{k: v for k, v in c.items() if k not in ROUTING_FIELDS} for c in calls]
        form = {**m.form, "payload": {**m.form["payload"], "model_calls": bare}}
        out.append(replace(m, form=form))
    return out


def rerun(
    db_url: str, run_id: str, from_message: str, changes: Changes, **kwargs: Any
) -> ForkReport:
    """Synchronous :func:`rerun_async` (runs its own event loop)."""
    return asyncio.run(rerun_async(db_url, run_id, from_message, changes, **kwargs))


__all__ = ["ForkReport", "rerun", "rerun_async", "tasks_before"]
